# Commands on <prefix>/<site>/<dev>/cmd, each answered on .../ack. Loaded when a command arrives
# and unloaded after it (the app calls humigraph.unload), so it costs no RAM between commands.
import gc
import json

import asyncio
import machine

from . import log
from .sensor import ERRORS, OK

CMDS = ("read", "interval", "reboot", "announce", "ping", "set", "stay_awake")
_LIVE_KEYS = ("log.level", "sensor.interval", "ha.discovery")


async def _ack(app, cid, ok, result=None, error=None):
    d = {"id": cid, "ok": ok}
    if ok:
        d["result"] = result
    else:
        d["error"] = error
        log.warn("cmd", "refused: %s" % error)
    await app.mq.publish(app.base + "/ack", json.dumps(d), qos=1)


async def run(app, msg, retained):
    try:
        c = json.loads(msg)
        if not isinstance(c, dict):
            raise ValueError
    except ValueError:
        await _ack(app, None, False, error="not a JSON object: %r; send "
                   "{\"id\": \"1\", \"cmd\": \"ping\"}" % bytes(msg[:60]))
        return
    cid = c.get("id")
    cmd = c.get("cmd")
    if cid is not None and cid in app.seen_ids:
        return  # a QoS 1 redelivery
    if cid is not None:
        app.seen_ids.append(cid)
        if len(app.seen_ids) > 8:
            app.seen_ids.pop(0)
    if cmd not in CMDS:
        await _ack(app, cid, False, error="unknown cmd %r; use one of %s" % (cmd, ", ".join(CMDS)))
        return
    if retained and cmd != "stay_awake":
        log.warn("cmd", "ignored retained %r (only stay_awake may be retained)" % cmd)
        return
    log.info("cmd", "%s (id %s)" % (cmd, cid))
    if cmd == "ping":
        await _ack(app, cid, True, {"pong": True, "up": log.uptime_ms(), "free": gc.mem_free(),
                                    "heap_peak": app.heap_peak, "buffered": app.buf.pending(),
                                    "published": app.published})
    elif cmd == "read":
        seq, err = await app.sample()
        sn = app.sensor
        await _ack(app, cid, True, {"boot": app.buf.boot, "seq": seq, "ok": err == OK,
                                    "err": ERRORS[err],
                                    "t": sn.t / 10 if err == OK else None,
                                    "rh": sn.rh / 10 if err == OK else None})
    elif cmd == "announce":
        await app.publish_meta(True)
        await _ack(app, cid, True, "announced")
    elif cmd == "reboot":
        await _ack(app, cid, True, "rebooting")
        await asyncio.sleep_ms(300)  # let the ack's PUBACK through
        app.buf.sync()
        log.warn("app", "reboot requested over MQTT")
        machine.reset()
    elif cmd == "stay_awake":
        app.stay_awake = bool(c.get("value", True))
        await _ack(app, cid, True, {"stay_awake": app.stay_awake})
    else:
        await _set(app, cid, c, cmd)


async def _set(app, cid, c, cmd):
    from . import config

    if cmd == "interval":
        key, value = "sensor.interval", c.get("value")
    else:
        key, value = c.get("key"), c.get("value")
        if not isinstance(key, str):
            await _ack(app, cid, False, error="set needs \"key\" (e.g. \"log.level\") and \"value\"")
            return
    shown = "***" if "password" in key else value
    try:
        new = config.with_value(app.cfg, key, value)
    except config.ConfigError as e:
        await _ack(app, cid, False, error=str(e))
        return
    config.save(new)
    app.cfg = new
    live = key in _LIVE_KEYS
    if key == "sensor.interval":
        app.interval_ms = int(new["sensor"]["interval"] * 1000)
    elif key == "log.level":
        log.set_level(new["log"]["level"])
    log.info("cmd", "%s = %s saved%s" % (key, shown, "" if live else "; reboot to apply"))
    await _ack(app, cid, True, {"key": key, "value": shown, "reboot": not live})
    if live:
        await app.publish_meta()
