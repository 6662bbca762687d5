"""Helpers shared by the tests: a Mosquitto broker on a free port and an MQTT collector."""
