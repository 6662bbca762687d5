# Deep-sleep mode: wake, read, connect, publish everything buffered, sleep. Readings wait in RTC
# memory between wakes; a retained stay_awake command (delivered right after the subscription)
# keeps the board up for maintenance.
import time

import asyncio
import machine

from . import log


async def cycle(app):
    t0 = time.ticks_ms()
    awake_ms = int(app.cfg["sleep"]["awake"] * 1000)
    await app.sample()
    while time.ticks_diff(time.ticks_ms(), t0) < awake_ms:
        if app.connected.is_set() and app.buf.pending() == 0 and not app.cmds:
            await asyncio.sleep_ms(300)  # a retained stay_awake arrives right after SUBACK
            if not app.cmds:
                break
        await asyncio.sleep_ms(100)
    if app.stay_awake:
        log.info("app", "stay_awake set: not sleeping until it is cleared")
        return
    from .app import clear_bootfail

    clear_bootfail()
    app.buf.sync()
    if app.mq.isconnected():
        await app.mq.disconnect()
    ms = max(1000, app.interval_ms - time.ticks_diff(time.ticks_ms(), t0))
    log.info("app", "deep sleep for %d ms, %d readings buffered" % (ms, app.buf.pending()))
    machine.deepsleep(ms)
