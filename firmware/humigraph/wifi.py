# Wi-Fi supervisor: keeps the station link up with backoff, never blocking the sampler.
#
# ESP32 quirks respected: connect() must not be called while an attempt is in progress (it
# raises "Wifi Internal Error"), and after a wrong password the driver needs a disconnect() and a
# pause before the next attempt or it keeps failing.
import time

import asyncio
import network
from micropython import const

from . import log

_TIMEOUT_MS = const(15000)
_WRONG_PW_PAUSE_S = const(30)


class WiFi:
    def __init__(self, ssid, password, hostname):
        self.ssid = ssid
        self._pw = password
        self.sta = network.WLAN(network.STA_IF)
        self.up = asyncio.Event()  # set while the link is up
        try:
            network.hostname(hostname)
        except Exception:  # older firmware has no network.hostname
            pass

    def isconnected(self):
        return self.sta.isconnected()

    def rssi(self):
        try:
            return self.sta.status("rssi")
        except Exception:
            return None

    async def run(self):
        sta = self.sta
        backoff = 1
        while True:
            if sta.isconnected():
                if not self.up.is_set():
                    log.info("wifi", "connected to %r, ip %s, rssi %s dBm"
                             % (self.ssid, sta.ifconfig()[0], self.rssi()))
                    self.up.set()
                backoff = 1
                await asyncio.sleep_ms(500)
                continue
            if self.up.is_set():
                log.warn("wifi", "link to %r lost" % self.ssid)
                self.up.clear()
            sta.active(True)
            if sta.status() != network.STAT_CONNECTING:
                try:
                    sta.connect(self.ssid, self._pw)
                except OSError as e:  # the driver is still busy with an earlier attempt
                    log.warn("wifi", "connect refused by the driver: %s" % e)
            t0 = time.ticks_ms()
            st = network.STAT_CONNECTING
            while time.ticks_diff(time.ticks_ms(), t0) < _TIMEOUT_MS:
                st = sta.status()
                if sta.isconnected() or st in (network.STAT_WRONG_PASSWORD, network.STAT_NO_AP_FOUND,
                                               network.STAT_CONNECT_FAIL):
                    break
                await asyncio.sleep_ms(200)
            if sta.isconnected():
                continue
            try:
                sta.disconnect()  # resets the driver's state machine before the next try
            except OSError:
                pass
            if st == network.STAT_WRONG_PASSWORD:
                log.error("wifi", "wrong password for %r: fix wifi.password (REPL: setkey('wifi.password', "
                          "'...')); retrying in %d s" % (self.ssid, _WRONG_PW_PAUSE_S))
                await asyncio.sleep(_WRONG_PW_PAUSE_S)
                continue
            log.warn("wifi", "%s; retrying in %d s" % (
                "network %r not found" % self.ssid if st == network.STAT_NO_AP_FOUND
                else "no connection to %r (status %d)" % (self.ssid, st), backoff))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60)
