# Device configuration: one declarative schema plus cross-field checks.
#
# Runs on the board and on the host (humigraph flash validates config.json with this very module
# before uploading it), so it sticks to the common subset of MicroPython and CPython.
import json

REQUIRED = object()

# key: (kind, default, help). Kinds: "s" str, "S" str or null, "i" int, "n" number, "b" bool.
SCHEMA = {
    "device": ("s", REQUIRED, "the board's id, e.g. \"kitchen-1\""),
    "site": ("s", "home", "the site id, e.g. \"home\""),
    "wifi": {
        "ssid": ("s", REQUIRED, "your Wi-Fi network name"),
        "password": ("s", "", "your Wi-Fi password"),
        "hostname": ("S", None, "DHCP host name, default humigraph-<device>"),
    },
    "mqtt": {
        "host": ("s", REQUIRED, "the broker's address, e.g. \"192.168.1.10\""),
        "port": ("i", 0, "the broker's port (0: 1883, or 8883 with tls)"),
        "user": ("S", None, "the MQTT user name, or null"),
        "password": ("S", None, "the MQTT password, or null"),
        "tls": ("b", False, "true to connect with TLS"),
        "prefix": ("s", "humigraph", "the topic prefix"),
        "keepalive": ("i", 30, "MQTT keepalive in seconds"),
    },
    "sensor": {
        "model": ("s", "dht22", "dht11, dht22 or am2302"),
        "pin": ("i", 4, "the GPIO of the DHT data line"),
        "interval": ("n", 10, "seconds between readings"),
    },
    "buffer": {
        "max": ("i", 2000, "readings kept on flash while the broker is out of reach"),
        "batch": ("i", 8, "readings collected in RTC memory before one flash write"),
    },
    "sleep": {
        "deep": ("b", False, "true: deep sleep between readings (battery boards)"),
        "window": ("n", 3, "seconds at boot to press Ctrl-C for the REPL in deep-sleep mode"),
        "awake": ("n", 15, "at most this many seconds awake per deep-sleep cycle"),
    },
    "ha": {
        "discovery": ("b", True, "publish Home Assistant discovery"),
        "prefix": ("s", "homeassistant", "Home Assistant's discovery prefix"),
    },
    "log": {"level": ("s", "info", "debug, info, warning or error")},
}

MODELS = ("dht11", "dht22", "am2302")
# Minimum spacing between conversions (datasheets): reading sooner returns the previous value.
MIN_INTERVAL = {"dht11": 1, "dht22": 2, "am2302": 2}
LEVELS = ("debug", "info", "warning", "error")
_OK_PINS = "4, 13, 14, 16-19, 21-23, 25-27, 32 or 33"


class ConfigError(Exception):
    # str(e) is the one console line: "<key>: <what is wrong>; <the fix>"
    def __init__(self, key, msg):
        super().__init__("%s: %s" % (key, msg))
        self.key = key


def _kind_ok(kind, v):
    if kind == "b":
        return v is True or v is False
    if kind == "i":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "n":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "S":
        return v is None or isinstance(v, str)
    return isinstance(v, str)


_KIND_NAMES = {"b": "true or false", "i": "a whole number", "n": "a number",
               "S": "a string or null", "s": "a string"}


def _fill(schema, given, path, out):
    if not isinstance(given, dict):
        raise ConfigError(path or "config", "must be a JSON object {...}")
    for k in given:
        if k not in schema:
            raise ConfigError(path + k, "unknown key; remove it (known here: %s)"
                              % ", ".join(sorted(schema)))
    for k in schema:
        spec = schema[k]
        key = path + k
        if isinstance(spec, dict):
            out[k] = {}
            _fill(spec, given.get(k, {}), key + ".", out[k])
            continue
        kind, default, hint = spec
        if k not in given:
            if default is REQUIRED:
                raise ConfigError(key, "missing; set it to %s" % hint)
            out[k] = default
            continue
        v = given[k]
        if not _kind_ok(kind, v):
            raise ConfigError(key, "must be %s, got %s; set it to %s"
                              % (_KIND_NAMES[kind], json.dumps(v), hint))
        out[k] = v


def _check_id(key, v):
    ok = 0 < len(v) <= 32 and v[0] not in "-_"
    for c in v:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "-_"):
            ok = False
    if not ok:
        raise ConfigError(key, "%s is not a valid id; use 1-32 of a-z, 0-9, - and _, "
                          "starting with a letter or digit" % json.dumps(v))


def check_pin(pin):
    # Returns None when the pin can drive a DHT data line, else why not and what to use.
    if pin in (6, 7, 8, 9, 10, 11):
        return "GPIO %d is wired to the flash chip; use %s" % (pin, _OK_PINS)
    if 34 <= pin <= 39:
        return ("GPIO %d is input-only (no output, no pull-up) and cannot drive the DHT data line; "
                "use %s" % (pin, _OK_PINS))
    if pin in (1, 3):
        return "GPIO %d is the REPL UART (TX/RX); use %s" % (pin, _OK_PINS)
    if pin == 12:
        return ("GPIO 12 is a strapping pin: the DHT pull-up sets the flash to 1.8 V and the board "
                "will not boot; use %s" % _OK_PINS)
    if pin < 0 or pin > 39 or pin in (20, 24, 28, 29, 30, 31):
        return "GPIO %d does not exist on the ESP32; use %s" % (pin, _OK_PINS)
    return None


def _cross_check(c):
    _check_id("device", c["device"])
    _check_id("site", c["site"])
    s = c["sensor"]
    if s["model"] not in MODELS:
        raise ConfigError("sensor.model", "%s is not supported; use one of %s"
                          % (json.dumps(s["model"]), ", ".join(MODELS)))
    why = check_pin(s["pin"])
    if why:
        raise ConfigError("sensor.pin", why)
    lo = MIN_INTERVAL[s["model"]]
    if s["interval"] < lo or s["interval"] > 86400:
        raise ConfigError("sensor.interval", "%s s is outside %d..86400 s; a %s needs at least %d s "
                          "between readings" % (s["interval"], lo, s["model"].upper(), lo))
    m = c["mqtt"]
    if not m["host"]:
        raise ConfigError("mqtt.host", "is empty; set it to the broker's address")
    if m["port"] == 0:
        m["port"] = 8883 if m["tls"] else 1883
    if not 0 < m["port"] < 65536:
        raise ConfigError("mqtt.port", "%d is not a TCP port; use 1883 (or 8883 with tls)" % m["port"])
    if not 5 <= m["keepalive"] <= 3600:
        raise ConfigError("mqtt.keepalive", "must be 5..3600 s")
    p = m["prefix"]
    if not p or p[0] == "/" or p[-1] == "/" or "+" in p or "#" in p:
        raise ConfigError("mqtt.prefix", "%s is not a valid topic prefix; use e.g. \"humigraph\" "
                          "(no leading or trailing /, no + or #)" % json.dumps(p))
    if (m["user"] is None) != (m["password"] is None) and m["user"] is None:
        raise ConfigError("mqtt.user", "a password is set but no user; set mqtt.user too")
    if not c["wifi"]["ssid"]:
        raise ConfigError("wifi.ssid", "is empty; set it to your Wi-Fi network name")
    b = c["buffer"]
    if not 10 <= b["max"] <= 50000:
        raise ConfigError("buffer.max", "must be 10..50000 readings")
    if not 1 <= b["batch"] <= 48:
        raise ConfigError("buffer.batch", "must be 1..48 (it lives in 2 KiB of RTC memory)")
    sl = c["sleep"]
    if not 0 <= sl["window"] <= 30:
        raise ConfigError("sleep.window", "must be 0..30 s")
    if not 5 <= sl["awake"] <= 300:
        raise ConfigError("sleep.awake", "must be 5..300 s")
    if c["log"]["level"] not in LEVELS:
        raise ConfigError("log.level", "%s is not a level; use one of %s"
                          % (json.dumps(c["log"]["level"]), ", ".join(LEVELS)))


def validate(given):
    """Returns the complete configuration (defaults filled in) or raises ConfigError."""
    out = {}
    _fill(SCHEMA, given, "", out)
    _cross_check(out)
    return out


def load(path="config.json"):
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        raise ConfigError(path, "missing; upload one with `humigraph flash --config FILE`")
    try:
        given = json.loads(raw)
    except ValueError:
        raise ConfigError(path, "is not valid JSON; fix it or upload a new one with "
                          "`humigraph flash --config FILE`")
    return validate(given)


def with_value(cfg, key, value):
    """A validated copy of cfg with one dotted key set (for the `set` command)."""
    given = json.loads(json.dumps(cfg))
    parts = key.split(".")
    d = given
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            raise ConfigError(key, "unknown key")
        d = d[p]
    if parts[-1] not in d:
        raise ConfigError(key, "unknown key")
    d[parts[-1]] = value
    return validate(given)


def save(cfg, path="config.json"):
    # Write then rename: a power cut mid-write must not leave a broken config (safe mode).
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(json.dumps(cfg))
    import os
    os.rename(tmp, path)
