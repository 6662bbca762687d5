# Console log: "[uptime] L tag: message", one line per event, filtered by level.
# Lines are printed immediately (no buffering in RAM) so a crash never hides the last words.
import time

_last = time.ticks_ms()
_up = 0
LEVELS = ("debug", "info", "warning", "error")
_CHARS = "DIWE"
_min = 1


def set_level(name):
    global _min
    _min = LEVELS.index(name)


def uptime_ms():
    # ticks_ms wraps after 2**30 ms on the ESP32 (12 days); accumulate so uptime does not, as long
    # as this is called at least every few days (every reading and log line does).
    global _last, _up
    now = time.ticks_ms()
    _up += time.ticks_diff(now, _last)
    _last = now
    return _up


def log(ch, tag, msg):
    # ch is the level letter: "D", "I", "W" or "E"
    if _CHARS.find(ch) < _min:
        return
    ms = uptime_ms()
    print("[%7d.%03d] %s %s: %s" % (ms // 1000, ms % 1000, ch, tag, msg))


def debug(tag, msg):
    log("D", tag, msg)


def info(tag, msg):
    log("I", tag, msg)


def warn(tag, msg):
    log("W", tag, msg)


def error(tag, msg):
    log("E", tag, msg)
