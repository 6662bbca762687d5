# Boot: config check (safe mode), failed-boot counting, then the app.
import time

import asyncio
import machine

from . import log, unload

_BOOTFAIL = ".bootfail"
_DEEPSLEEP_RESET = 4
app = None


def load_config():
    """The validated config, or None after printing the one line that says what is wrong.
    The schema is big: the module is dropped again so its bytecode is collected."""
    from . import config

    try:
        return config.load()
    except config.ConfigError as e:
        log.error("config", "%s -- safe mode: app not started; fix it with setkey('key', value) "
                  "or `humigraph flash --config`, then machine.reset()" % e)
        return None
    finally:
        config = None
        unload("config")


def start():
    """Runs the app: safe mode on a bad config or after repeated failed boots."""
    global app
    from .app import read_int, write_int

    cause = machine.reset_cause()
    cfg = load_config()
    if cfg is None:
        return
    if cfg["sleep"]["deep"] and cause != _DEEPSLEEP_RESET and cfg["sleep"]["window"]:
        log.info("app", "deep-sleep board: Ctrl-C within %s s for the REPL" % cfg["sleep"]["window"])
        time.sleep_ms(int(cfg["sleep"]["window"] * 1000))
    fails = 0 if cause == _DEEPSLEEP_RESET else read_int(_BOOTFAIL) + 1
    if fails > 3:
        log.error("app", "%d failed boots in a row -- safe mode: app not started; see the errors "
                  "above, then start() or remove %s and machine.reset()" % (fails - 1, _BOOTFAIL))
        return
    if fails:
        write_int(_BOOTFAIL, fails)
    from .app import App

    asyncio.new_event_loop()  # start() again after Ctrl-C needs a fresh loop
    app = App(cfg, cause)
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        app.buf.sync()
        log.info("app", "stopped by Ctrl-C; REPL helpers: status(), read(), setkey(key, value), start()")
    except Exception as e:
        import sys

        sys.print_exception(e)
        log.error("app", "crashed (%s); rebooting in 5 s" % e)
        try:
            app.buf.sync()
        except Exception:
            pass
        time.sleep_ms(5000)
        machine.reset()
