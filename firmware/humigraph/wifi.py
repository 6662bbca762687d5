# Wi-Fi supervisor: keeps the station link up with backoff, never blocking the sampler.
#
# ESP32 quirks respected: connect() must not be called while a connection attempt is in
# progress (it raises "Wifi Internal Error"), and after a wrong password the driver needs a pause
# (and a disconnect()) before the next attempt or it keeps failing.
import time

import asyncio
from micropython import const

from . import log

_CONNECT_TIMEOUT_MS = const(15000)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_WRONG_PW_PAUSE_MS = const(30000)


class WiFi:
    def __init__(self, ssid, password, hostname=None):
        import network

        self._net = network
        self.ssid = ssid
        self._pw = password
        self.sta = network.WLAN(network.STA_IF)
        self.up = asyncio.Event()  # set while the link is up
        self.failures = 0
        if hostname:
            try:
                network.hostname(hostname)
            except Exception:  # older firmware: config(dhcp_hostname=...)
                try:
                    self.sta.config(dhcp_hostname=hostname)
                except Exception:
                    pass

    def isconnected(self):
        return self.sta.isconnected()

    def rssi(self):
        try:
            return self.sta.status("rssi")
        except Exception:
            return None

    async def _attempt(self):
        net = self._net
        sta = self.sta
        sta.active(True)
        if sta.status() != net.STAT_CONNECTING:
            try:
                sta.connect(self.ssid, self._pw)
            except OSError as e:  # "Wifi Internal Error" when the driver is still busy
                log.warn("wifi", "connect to %r refused by the driver: %s" % (self.ssid, e))
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < _CONNECT_TIMEOUT_MS:
            if sta.isconnected():
                return 0
            st = sta.status()
            if st == net.STAT_WRONG_PASSWORD:
                return st
            if st == net.STAT_NO_AP_FOUND or st == net.STAT_CONNECT_FAIL:
                return st
            await asyncio.sleep_ms(200)
        return -1

    async def run(self):
        net = self._net
        backoff = _BACKOFF_MIN_MS
        while True:
            if self.sta.isconnected():
                if not self.up.is_set():
                    ip = self.sta.ifconfig()[0]
                    log.info("wifi", "connected to %r, ip %s, rssi %s dBm" % (self.ssid, ip, self.rssi()))
                    self.up.set()
                backoff = _BACKOFF_MIN_MS
                await asyncio.sleep_ms(500)
                continue
            if self.up.is_set():
                log.warn("wifi", "link to %r lost" % self.ssid)
                self.up.clear()
            st = await self._attempt()
            if st == 0:
                self.failures = 0
                continue
            self.failures += 1
            try:
                self.sta.disconnect()  # resets the driver's state machine before the next try
            except OSError:
                pass
            if st == net.STAT_WRONG_PASSWORD:
                log.error("wifi", "wrong password for %r: fix wifi.password (console: "
                          "setkey('wifi.password', '...')); retrying in %d s" % (self.ssid, _WRONG_PW_PAUSE_MS // 1000))
                await asyncio.sleep_ms(_WRONG_PW_PAUSE_MS)
                continue
            why = "network %r not found" % self.ssid if st == net.STAT_NO_AP_FOUND else (
                "no connection within %d s" % (_CONNECT_TIMEOUT_MS // 1000) if st == -1 else "status %d" % st)
            log.warn("wifi", "%s; retrying in %d s" % (why, backoff // 1000))
            await asyncio.sleep_ms(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)
