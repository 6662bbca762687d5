# What the board says about itself: the connect sequence (online, subscriptions, discovery), meta
# and Home Assistant discovery. Built rarely, so loaded on demand and dropped again (app.py).
import gc
import json

from . import VERSION, log, unload
from .app import RESETS
from .buffer import FLAG_NTP


async def on_connect(app):
    mq, c = app.mq, app.cfg
    if not app.buf.flags & FLAG_NTP:
        app.ntp()
    log.info("mqtt", "connected to %s:%d as humigraph-%s; %d readings to send"
             % (c["mqtt"]["host"], c["mqtt"]["port"], c["device"], app.buf.pending()))
    await mq.publish(app.base + "/status", "online", retain=True, qos=1)
    await mq.subscribe(app.base + "/cmd", 1)
    if c["ha"]["discovery"]:
        await mq.subscribe(c["ha"]["prefix"] + "/status", 1)
    await publish(app, True)


async def publish(app, announce):
    c = app.cfg
    if announce and c["ha"]["discovery"]:
        from .ha import discovery

        msg = discovery(c, app.base, c["sensor"]["model"])
        discovery = None
        unload("ha")
        await app.mq.publish("%s/device/%s/config" % (c["ha"]["prefix"], c["device"]), msg,
                             retain=True, qos=1)
        msg = None
    s, sn, b = c["sensor"], app.sensor, app.buf
    e = sn.errors
    gc.collect()
    msg = json.dumps({
        "fw": VERSION, "sensor": s["model"], "pin": s["pin"], "interval": s["interval"],
        "reset": RESETS.get(app.cause, "unknown"), "free": gc.mem_free(),
        "heap_peak": app.heap_peak, "buffered": b.pending(), "dropped": b.dropped,
        "rssi": app.wifi.rssi(), "boot": b.boot, "reads": sn.reads,
        "errors": {"timeout": e[1], "checksum": e[2], "implausible": e[3], "not_ready": e[4]},
        "flash_writes": b.writes, "deep_sleep": c["sleep"]["deep"], "ntp": bool(b.flags & FLAG_NTP),
    })
    await app.mq.publish(app.base + "/meta", msg, retain=True, qos=1)
