"""The local brokers behind the demo and the tests."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from humigraph.broker import EmbeddedBroker, Mosquitto, local_broker


def roundtrip(port: int, topic: str = "t/x") -> list[bytes]:
    got: list[bytes] = []
    ev = threading.Event()

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        got.append(bytes(m.payload))
        ev.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("t/#", 1)
    c.loop_start()
    try:
        time.sleep(0.3)
        c.publish(topic, b"hello", qos=1).wait_for_publish(5)
        ev.wait(5)
    finally:
        c.loop_stop()
        c.disconnect()
    return got


def test_mosquitto_stop_kill_restart_keep_the_port() -> None:
    with Mosquitto() as m:
        port = m.port
        assert roundtrip(port) == [b"hello"]
        m.kill()
        assert not m.running()
        m.start()
        assert m.port == port and roundtrip(port) == [b"hello"]
        m.restart()
        assert roundtrip(port) == [b"hello"]


def test_mosquitto_keeps_retained_across_a_clean_restart() -> None:
    with Mosquitto() as m:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", m.port)
        c.loop_start()
        c.publish("t/r", b"kept", qos=1, retain=True).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
        time.sleep(1.2)  # autosave_interval 1
        m.restart()
        assert roundtrip(m.port, "t/other")[:1] == [b"kept"]


def test_embedded_broker_fallback() -> None:
    pytest.importorskip("amqtt")
    b = EmbeddedBroker().start()
    try:
        assert roundtrip(b.port) == [b"hello"]
    finally:
        b.stop()


def test_local_broker_prefers_mosquitto() -> None:
    assert isinstance(local_broker(), Mosquitto)
