# DHT11 / DHT22 / AM2302 on one GPIO.
#
# The stock driver (dht.DHT11/DHT22) does the bit-banging and the checksum; we decode its raw
# bytes ourselves because it drops DHT11 decimals and negative temperatures. A failed read is
# data: read() returns an error code and the reading is published with ok=false.
import time

import asyncio
from micropython import const

from . import log, unload

OK = const(0)
TIMEOUT = const(1)
CHECKSUM = const(2)
IMPLAUSIBLE = const(3)
NOT_READY = const(4)
ERRORS = (None, "timeout", "checksum", "implausible", "not_ready")

_WARMUP_MS = const(1500)  # no reads this soon after power-up or wake (datasheet: >1 s)
_HINT_EVERY = const(30)   # repeat a fix-it hint every N failures of a streak

def decode(model, b):
    # b: the 5 raw bytes (checksum already verified). Returns (t, rh) in 0.1 units as ints.
    if model == "dht11":
        # Newer DHT11s send a decimal byte for each value and the sign in bit 7 of the t decimal.
        rh = b[0] * 10 + (b[1] if b[1] < 10 else 0)
        t = b[2] * 10 + ((b[3] & 0x7F) if (b[3] & 0x7F) < 10 else 0)
        if b[3] & 0x80:
            t = -t
    else:
        rh = (b[0] << 8) | b[1]
        t = ((b[2] & 0x7F) << 8) | b[3]
        if b[2] & 0x80:
            t = -t
    return t, rh


def plausible(model, t, rh):
    # t, rh in tenths. Rejects impossible values and the known garbage patterns of failing parts.
    if rh > 1000 or rh < 0:
        return False
    if t == 10 and rh == 10:  # the fake "1 °C / 1 %" of clone DHT11s
        return False
    if t == 0 and rh <= 20:  # all-zero frames pass the checksum: 0 °C with 0-2 %
        return False
    if model == "dht11":
        return -200 <= t <= 600
    return -400 <= t <= 800


class Sensor:
    def __init__(self, model, pin):
        self.model = model
        self.pin = pin
        self.min_ms = 1000 if model == "dht11" else 2000
        self.t = 0  # last good values, in tenths
        self.rh = 0
        self.errors = [0, 0, 0, 0, 0]  # per error code
        self.reads = 0
        self.streak = 0  # consecutive failed reads
        self._last = time.ticks_add(time.ticks_ms(), _WARMUP_MS - self.min_ms)
        self._lock = asyncio.Lock()  # a `read` command must not interleave with the sampler
        self._dev = None
        try:
            import dht
            import machine

            p = machine.Pin(pin, machine.Pin.OPEN_DRAIN, machine.Pin.PULL_UP)
            self._dev = dht.DHT11(p) if model == "dht11" else dht.DHT22(p)
        except Exception as e:  # ValueError for a bad pin; anything else is still a failed read
            log.error("sensor", "%s on GPIO%d: %s" % (model.upper(), pin, e))

    async def _spacing(self):
        wait = time.ticks_diff(time.ticks_add(self._last, self.min_ms), time.ticks_ms())
        if wait > 0:
            await asyncio.sleep_ms(wait)

    async def read(self, attempts=2):
        """Reads once (with bounded retries). Returns an error code; good values in .t/.rh."""
        async with self._lock:
            err = NOT_READY
            if self._dev is not None:
                for _ in range(attempts):
                    await self._spacing()
                    err = self._read_once()
                    self._last = time.ticks_ms()
                    if err == OK or err == IMPLAUSIBLE:
                        break
            self.reads += 1
            self._account(err)
            return err

    def _read_once(self):
        d = self._dev
        try:
            d.measure()
        except OSError:  # ETIMEDOUT: the sensor did not answer
            return TIMEOUT
        except Exception:  # the driver raises a plain Exception on a checksum mismatch
            return CHECKSUM
        t, rh = decode(self.model, d.buf)
        if not plausible(self.model, t, rh):
            self.bad = (t, rh)
            return IMPLAUSIBLE
        self.t = t
        self.rh = rh
        return OK

    def _account(self, err):
        if err == OK:
            if self.streak:
                log.info("sensor", "GPIO%d: reading again after %d failed reads" % (self.pin, self.streak))
            self.streak = 0
            return
        self.errors[err] += 1
        if self.streak % _HINT_EVERY == 0:
            # The fix-it texts are long: loaded for the line, then dropped from RAM.
            from .hints import sensor_hint

            log.warn("sensor", sensor_hint(self, err))
            sensor_hint = None
            unload("hints")
        self.streak += 1
