# humigraph virtual board: `machine` for the MicroPython unix port, standing in for the ESP32 one.
# The runner (host/humigraph/board/virtual.py) talks to these shims through small files in the
# control directory named by $HUMIGRAPH_CTL (see docs/virtual-board.md). Keep this module small:
# the application runs in a 64 KiB heap and real ESP32 modules cost it nothing.
import os
import sys
import time

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
SLEEP = 2
DEEPSLEEP = 4
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

_CTL = os.getenv("HUMIGRAPH_CTL") or "."


def _ctl_read(name, mode="r"):
    # contents of a control file, or None when it is absent
    try:
        with open(_CTL + "/" + name, mode) as f:
            return f.read()
    except OSError:
        return None


def _ctl_write(name, data, mode="w"):
    # one write() call; the runner only acts on complete contents (see docs/virtual-board.md)
    with open(_CTL + "/" + name, mode) as f:
        f.write(data)


def _exit(what):
    try:
        sys.stdout.flush()
    except Exception:
        pass
    _ctl_write("exit", what + "\n")
    # the runner also SIGKILLs the process as soon as it sees the exit file, so an application
    # that swallows SystemExit cannot keep running after a reset
    sys.exit(0)


_cause = None


def reset_cause():
    global _cause
    if _cause is None:
        try:
            _cause = int(_ctl_read("reset_cause") or PWRON_RESET)
        except ValueError:
            _cause = PWRON_RESET
    return _cause


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


_uid = None


def unique_id():
    global _uid
    if _uid is None:
        import hashlib

        h = hashlib.sha256((os.getenv("HUMIGRAPH_DEVICE") or "virtual").encode()).digest()
        # a unicast, globally administered MAC-like id (ESP32: the base MAC address)
        _uid = bytes([h[0] & 0xFC]) + h[1:6]
    return _uid


def reset():
    _exit("reset")


def soft_reset():
    _exit("soft_reset")


def bootloader(*args):
    _exit("bootloader")


def deepsleep(ms=0):
    _exit("deepsleep %d" % int(ms))


def lightsleep(ms=None):
    if ms is None:
        while True:
            time.sleep(60)
    time.sleep_ms(int(ms))


sleep = lightsleep

_freq = 160000000


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def dht_readinto(pin, buf):
    from esp import dht_readinto as f

    f(pin, buf)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        if isinstance(id, Pin):
            id = id._id
        # ESP32 (WROOM) GPIOs: 0-39 without 20, 24, 28-31; 34-39 are input only
        if not isinstance(id, int) or id < 0 or id > 39 or id in (20, 24, 28, 29, 30, 31):
            raise ValueError("invalid pin")
        self._id = id
        self._mode = None
        self._pull = None
        self._v = 0
        self.init(mode, pull, value, **kw)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id >= 34:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._v = 1 if value else 0

    def value(self, x=None):
        if x is None:
            if self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
                return self._v
            return 1 if self._pull == Pin.PULL_UP else 0
        self._v = 1 if x else 0

    __call__ = value

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def irq(self, handler=None, trigger=3, *a, **kw):
        return None


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is not None:
            # accepted, but the virtual board's clock is the host's UTC clock
            return None
        t = time.time()
        y, mo, d, h, mi, s, wd, yd = time.gmtime(int(t))[:8]
        return (y, mo, d, wd, h, mi, s, int((t % 1) * 1000000))

    def init(self, dt=None):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return _ctl_read("rtc_memory", "rb") or b""
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _ctl_write("rtc_memory", bytes(data), "wb")


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self._min = min(200, timeout // 4)
        self._last = time.ticks_ms()
        _ctl_write("wdt_timeout", str(int(timeout)))
        _ctl_write("wdt", str(time.time()))

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last) >= self._min:
            self._last = now
            # the runner uses this file's modification time
            _ctl_write("wdt", str(time.time()))
