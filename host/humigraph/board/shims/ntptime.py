# humigraph virtual board: `ntptime`. The host clock already is UTC, so a successful settime()
# changes nothing; it fails like the real one (OSError ETIMEDOUT after `timeout` s) when the
# board has no Wi-Fi link.
host = "pool.ntp.org"
timeout = 1


def _online():
    import network

    return network.WLAN(network.STA_IF).isconnected()


def time():
    import time as _t

    if not _online():
        import errno

        _t.sleep(timeout)
        raise OSError(errno.ETIMEDOUT)
    _t.sleep_ms(20)
    return int(_t.time())


def settime():
    time()
