# Home Assistant MQTT device discovery: one retained message describes the board and its two
# entities. Written as one template: building it as dicts for json.dumps needs several KiB of
# heap at once, the template only the finished string. Loaded on demand (info.py) and dropped.
from . import VERSION

_ENTITY = (
    '"%s_%s":{"p":"sensor","name":"%s","device_class":"%s","state_class":"measurement",'
    '"unit_of_measurement":"%s","value_template":"{{ value_json.%s }}","unique_id":"%s_%s",'
    '"expire_after":%d}'
)
_DEVICE = (
    '{"dev":{"ids":["%s"],"name":"%s","mf":"humigraph","mdl":"%s","sw":"%s","sa":"%s"},'
    '"o":{"name":"humigraph","sw":"%s"},"cmps":{%s,%s},"state_topic":"%s/state",'
    '"availability_topic":"%s/status","payload_available":"online",'
    '"payload_not_available":"offline","qos":1}'
)


def discovery(cfg, base, model):
    dev = cfg["device"]
    # expire_after: about three missed readings (plus the awake window of a sleeping board)
    exp = int(cfg["sensor"]["interval"] * 3) + 5
    if cfg["sleep"]["deep"]:
        exp += int(cfg["sleep"]["awake"])
    uid = "humigraph_" + dev.replace("-", "_")
    t = _ENTITY % (uid, "t", "Temperature", "temperature", "\u00b0C", "t", uid, "t", exp)
    rh = _ENTITY % (uid, "rh", "Humidity", "humidity", "%", "rh", uid, "rh", exp)
    return _DEVICE % (uid, dev, model.upper(), VERSION, cfg["site"], VERSION, t, rh, base, base)
