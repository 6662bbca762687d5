# REPL helpers, loaded only when called from the console (main.py has thin wrappers).
import asyncio

from . import log, unload
from .start import load_config


def status():
    """REPL helper: what the board is doing."""
    import gc

    from .app import tenths
    from .sensor import ERRORS

    from . import start

    a = start.app
    if a is None or a.wifi is None:
        print("app not started (safe mode?). Fix config with setkey('key', value), then start()")
        return
    b, sn, s = a.buf, a.sensor, a.cfg["sensor"]
    print("device %s/%s  boot %d  seq %d  uptime %d s" % (a.cfg["site"], a.cfg["device"], b.boot,
                                                           b.seq, log.uptime_ms() // 1000))
    print("sensor %s GPIO%d every %s s: last %s C %s %%, last error %s, errors %s"
          % (s["model"], s["pin"], s["interval"], tenths(sn.t), tenths(sn.rh),
             ERRORS[a.last_err], sn.errors[1:]))
    print("wifi %s  mqtt %s  buffered %d (flash %d)  dropped %d  published %d  free %d"
          % ("up" if a.wifi and a.wifi.isconnected() else "down",
             "connected" if a.connected.is_set() else "down", b.pending(), b.pending_flash(),
             b.dropped, a.published, gc.mem_free()))


def read():
    """REPL helper: one reading now, printed (not published)."""
    from .app import tenths
    from .sensor import ERRORS, OK, Sensor

    cfg = load_config()
    if cfg is None:
        return
    sn = Sensor(cfg["sensor"]["model"], cfg["sensor"]["pin"])
    e = asyncio.run(sn.read())
    if e == OK:
        print("%s C  %s %%" % (tenths(sn.t), tenths(sn.rh)))
    else:
        print("read failed: %s" % ERRORS[e])


def setkey(key, value):
    """REPL helper: validates and saves one config key, e.g. setkey('sensor.pin', 4)."""
    import json

    from . import config

    try:
        with open("config.json") as f:
            cfg = json.loads(f.read())
    except (OSError, ValueError):
        cfg = {}
    d = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
    try:
        config.save(config.validate(cfg))
        print("saved %s; start() or machine.reset() to apply" % key)
    except config.ConfigError as e:
        print("not saved: %s" % e)
    finally:
        config = None
        unload("config")
