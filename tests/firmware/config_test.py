# The device config schema: defaults, types, cross-field checks, one message naming the key.
import _mpytest
from _mpytest import eq, raises

from humigraph import config

BASE = {"device": "kitchen-1", "wifi": {"ssid": "w"}, "mqtt": {"host": "10.0.0.2"}}


def cfg(**over):
    import json

    c = json.loads(json.dumps(BASE))
    for k, v in over.items():
        d = c
        parts = k.split("__")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    return c


def err(c):
    return raises(config.ConfigError, config.validate, c)


def test_defaults_filled():
    c = config.validate(cfg())
    eq(c["site"], "home")
    eq(c["sensor"], {"model": "dht22", "pin": 4, "interval": 10})
    eq(c["mqtt"]["port"], 1883)
    eq(c["buffer"]["max"], 2000)
    eq(c["log"]["level"], "info")


def test_tls_default_port():
    eq(config.validate(cfg(mqtt__tls=True))["mqtt"]["port"], 8883)


def test_unknown_key_named():
    e = err(cfg(sensor__pinn=4))
    eq(e.key, "sensor.pinn")
    eq("unknown key" in str(e), True)


def test_wrong_type_named():
    e = err(cfg(sensor__pin="4"))
    eq(e.key, "sensor.pin")
    eq("whole number" in str(e), True)
    eq(err(cfg(sleep__deep=1)).key, "sleep.deep")
    eq(err(cfg(mqtt__port=True)).key, "mqtt.port")


def test_missing_required():
    c = cfg()
    del c["wifi"]["ssid"]
    eq(err(c).key, "wifi.ssid")


def test_input_only_pin():
    e = err(cfg(sensor__pin=35))
    eq(e.key, "sensor.pin")
    eq("input-only" in str(e), True)


def test_flash_pins_and_uart_and_strapping():
    for p in (6, 11):
        eq("flash" in str(err(cfg(sensor__pin=p))), True)
    eq("UART" in str(err(cfg(sensor__pin=1))), True)
    eq("strapping" in str(err(cfg(sensor__pin=12))), True)
    eq("does not exist" in str(err(cfg(sensor__pin=24))), True)


def test_good_pins():
    for p in (4, 13, 14, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33):
        eq(config.validate(cfg(sensor__pin=p))["sensor"]["pin"], p)


def test_interval_below_sensor_minimum():
    e = err(cfg(sensor__interval=1.5))
    eq(e.key, "sensor.interval")
    eq("DHT22 needs at least 2 s" in str(e), True)
    eq(config.validate(cfg(sensor__model="dht11", sensor__interval=1))["sensor"]["interval"], 1)


def test_bad_ids_and_prefix():
    eq(err(cfg(device="Kitchen 1")).key, "device")
    eq(err(cfg(site="a/b")).key, "site")
    eq(err(cfg(mqtt__prefix="a/#")).key, "mqtt.prefix")


def test_model_and_level():
    eq(err(cfg(sensor__model="dht21")).key, "sensor.model")
    eq(err(cfg(log__level="verbose")).key, "log.level")


def test_with_value_validates():
    c = config.validate(cfg())
    eq(config.with_value(c, "sensor.interval", 30)["sensor"]["interval"], 30)
    eq(raises(config.ConfigError, config.with_value, c, "sensor.interval", 0.5).key, "sensor.interval")
    eq(raises(config.ConfigError, config.with_value, c, "nope.x", 1).key, "nope.x")


def test_message_is_one_line():
    for bad in (cfg(sensor__pin=34), cfg(foo=1), cfg(sensor__interval=0)):
        eq("\n" in str(err(bad)), False)


if __name__ == "__main__":
    _mpytest.main(globals())
