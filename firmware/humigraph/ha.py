# Home Assistant MQTT device discovery: one retained message describes the board and its entities.
import json

from . import VERSION


def discovery(cfg, base, model):
    dev = cfg["device"]
    exp = int(cfg["sensor"]["interval"] * 3) + 5
    if cfg["sleep"]["deep"]:
        exp += int(cfg["sleep"]["awake"])
    uid = "humigraph_" + dev.replace("-", "_")

    def sensor(key, cls, unit, name):
        return {
            "p": "sensor",
            "name": name,
            "device_class": cls,
            "state_class": "measurement",
            "unit_of_measurement": unit,
            "value_template": "{{ value_json.%s }}" % key,
            "unique_id": "%s_%s" % (uid, key),
            "expire_after": exp,
        }

    return json.dumps({
        "dev": {"ids": [uid], "name": dev, "mf": "humigraph", "mdl": model.upper(), "sw": VERSION,
                "sa": cfg["site"]},
        "o": {"name": "humigraph", "sw": VERSION},
        "cmps": {
            uid + "_t": sensor("t", "temperature", "°C", "Temperature"),
            uid + "_rh": sensor("rh", "humidity", "%", "Humidity"),
        },
        "state_topic": base + "/state",
        "availability_topic": base + "/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
    })
