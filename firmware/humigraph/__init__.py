# humigraph firmware for ESP32 + DHT11/DHT22. Kept empty so that `import humigraph.x` costs only x.
VERSION = "0.1.0"
