# The application: asyncio tasks for sampling, Wi-Fi, the MQTT link, publishing, commands and the
# watchdog. Sampling never waits on the network: readings go to the buffer, the publisher drains
# it whenever the broker is reachable, and a reading leaves the buffer only on its PUBACK.
import gc
import time

import asyncio
import machine
from micropython import const

from . import VERSION, log, unload
from .buffer import FLAG_NTP, REC, Buffer, unpack
from .sensor import ERRORS, OK, Sensor

_WINDOW = const(8)  # QoS 1 publishes in flight at once
_WDT_MS = const(30000)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_META_EVERY_S = const(300)
_STABLE_S = const(60)  # running this long clears the failed-boot counter
_NTP_EVERY_S = const(6 * 3600)
_BOOTCOUNT = ".boot"
# The ESP32 port counts time from 2000, the unix port from 1970.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_MODELS = ("dht11", "dht22", "am2302")
RESETS = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deep_sleep", 5: "soft"}


def tenths(v):
    return "%s%d.%d" % ("-" if v < 0 else "", abs(v) // 10, abs(v) % 10)


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def write_int(path, v):
    with open(path, "w") as f:
        f.write(str(v))


class App:
    def __init__(self, cfg, reset_cause):
        self.cfg = cfg
        self.cause = reset_cause
        log.set_level(cfg["log"]["level"])
        dev, s = cfg["device"], cfg["sensor"]
        self.base = "%s/%s/%s" % (cfg["mqtt"]["prefix"], cfg["site"], dev)
        self.t_state = self.base + "/state"
        self.t_status = self.base + "/status"
        self.interval_ms = int(s["interval"] * 1000)
        self.sensor = Sensor(s["model"], s["pin"])
        self.model_code = _MODELS.index(s["model"])
        b = cfg["buffer"]
        self.buf = Buffer(b["max"], b["batch"], rtc=machine.RTC())
        if reset_cause == 4 and self.buf.restore_rtc():
            pass  # a deep-sleep wake continues the same boot
        else:
            kept = reset_cause != 1 and self.buf.restore_rtc()  # staged readings survive resets
            self.buf.boot = read_int(_BOOTCOUNT) + 1
            self.buf.seq = 0
            if not kept:
                self.buf.flags = 0
            write_int(_BOOTCOUNT, self.buf.boot)
            self.buf.save_rtc()
        self.wifi = None
        self.mq = None
        self.connected = asyncio.Event()
        self.kick = asyncio.Event()  # new reading or PUBACK: the publisher has work
        self.pids = []  # pids of state publishes in flight, oldest first
        self.early = []  # pids acknowledged out of order
        self.sent = 0  # records of the buffer published and not yet acknowledged
        self.dropped_seen = self.buf.dropped
        self.cmds = []
        self.seen_ids = []
        self.stay_awake = False
        self.beat = time.ticks_ms()
        self.last_err = OK
        self.rec = bytearray(REC)
        self.published = 0
        self.heap_peak = 0  # most live heap seen after a collection (bytes)

    # --- time and readings ----------------------------------------------------------------
    def now(self):
        if not self.buf.flags & FLAG_NTP:
            return 0, 0
        ns = time.time_ns()
        return ns // 1000000000 + _EPOCH, (ns // 1000000) % 1000

    async def sample(self):
        err = await self.sensor.read()
        ts, ms = self.now()
        sn = self.sensor
        seq = self.buf.add(ts, ms, log.uptime_ms(), sn.t, sn.rh, err, self.model_code)
        if not self.connected.is_set():
            # No PUBACK is coming soon: put it on flash now so a power cut cannot take it.
            self.buf.flush()
        self.last_err = err
        if err == OK:
            log.debug("sensor", "seq %d: %s C %s %%" % (seq, tenths(sn.t), tenths(sn.rh)))
        self.kick.set()
        return seq, err

    def payload(self, rec):
        boot, seq, ts, ms, up, t, rh, err, sensor = unpack(rec)
        ok = err == OK
        return '{"v":1,"dev":"%s","boot":%d,"seq":%d,"ts":%s,"up":%d,"t":%s,"rh":%s,"ok":%s,"err":%s,"sensor":"%s"}' % (
            self.cfg["device"], boot, seq, "%d.%03d" % (ts, ms) if ts else "null", up,
            tenths(t) if ok else "null", tenths(rh) if ok else "null", "true" if ok else "false",
            "null" if ok else '"%s"' % ERRORS[err], _MODELS[sensor])

    async def _sampler(self):
        nxt = time.ticks_ms()
        while True:
            await self.sample()
            self.beat = time.ticks_ms()
            nxt = time.ticks_add(nxt, self.interval_ms)
            wait = time.ticks_diff(nxt, time.ticks_ms())
            if wait < 0:  # fell behind (slow retries): restart the schedule from now
                nxt = time.ticks_ms()
                wait = 0
            await asyncio.sleep_ms(wait)

    # --- MQTT -----------------------------------------------------------------------------
    def _make_client(self):
        from .mqtt import MQTTClient

        m = self.cfg["mqtt"]
        ssl = None
        if m["tls"]:
            import ssl as _ssl

            ssl = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
            ssl.verify_mode = _ssl.CERT_NONE  # boards carry no CA store; use a private network
        c = MQTTClient("humigraph-" + self.cfg["device"], m["host"], m["port"], user=m["user"],
                       password=m["password"], keepalive=m["keepalive"], ssl=ssl,
                       will=(self.t_status, "offline", True, 1), max_inflight=_WINDOW + 4,
                       log=log.log)
        c.on_puback = self._on_puback
        c.on_message = self._on_message
        return c

    def _on_puback(self, pid):
        if pid not in self.pids:
            return  # an ack, meta or discovery publish
        if pid != self.pids[0]:
            self.early.append(pid)
            return
        n = 0
        while self.pids and (n == 0 or self.pids[0] in self.early):
            p = self.pids.pop(0)
            if p in self.early:
                self.early.remove(p)
            n += 1
        self.sent -= n
        self.published += n
        self.buf.ack(n)
        self.kick.set()

    def _on_message(self, topic, msg, retained):
        if topic == b"homeassistant/status" or topic == (self.cfg["ha"]["prefix"] + "/status").encode():
            if msg == b"online":
                self.cmds.append(("__ha", None))
                self.kick.set()
            return
        if len(self.cmds) < 4:
            self.cmds.append((msg, retained))
        else:
            log.warn("cmd", "too many commands queued; dropped %r" % msg[:40])
        self.kick.set()

    async def _link(self):
        m = self.cfg["mqtt"]
        backoff = _BACKOFF_MIN_MS
        while True:
            await self.wifi.up.wait()
            mq = self.mq
            try:
                await mq.connect()
            except OSError as e:
                log.warn("mqtt", "broker %s:%d unreachable (%s); retrying in %d s"
                         % (m["host"], m["port"], e, backoff // 1000))
            except Exception as e:  # MQTTError: the broker refused us
                code = getattr(e, "code", -1)
                hint = ("check mqtt.user and mqtt.password" if code in (4, 5)
                        else "check the broker's configuration")
                log.error("mqtt", "broker %s:%d refused the connection (code %d): %s; retrying in %d s"
                          % (m["host"], m["port"], code, hint, backoff // 1000))
            else:
                t0 = time.ticks_ms()
                try:
                    await self.on_connect()
                except Exception as e:  # OSError, or MQTTError for a refused subscription
                    log.warn("mqtt", "setup after connect failed: %r" % e)
                    mq.close()
                if mq.isconnected():
                    self.connected.set()
                    self.kick.set()
                    await mq.wait_down()
                self.connected.clear()
                self.buf.flush()  # staged readings will not be acknowledged soon: to flash
                self.pids = []
                self.early = []
                self.sent = 0
                log.warn("mqtt", "connection to %s:%d lost; %d readings buffered"
                         % (m["host"], m["port"], self.buf.pending()))
                if time.ticks_diff(time.ticks_ms(), t0) > 30000:
                    backoff = _BACKOFF_MIN_MS  # it was a working connection: retry quickly
                    continue
            await asyncio.sleep_ms(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)

    async def on_connect(self):
        from . import info

        try:
            await info.on_connect(self)
        finally:
            info = None
            unload("info")

    async def publish_meta(self, announce=False):
        # meta (and Home Assistant discovery with announce) are built rarely: loaded on demand
        if self.mq.isconnected():
            from . import info

            try:
                await info.publish(self, announce)
            finally:
                info = None
                unload("info")

    async def _publisher(self):
        rec = self.rec
        while True:
            await self.connected.wait()
            if self.buf.dropped != self.dropped_seen:
                # The ring dropped records while some were in flight: restart from the new head.
                self.dropped_seen = self.buf.dropped
                self.pids = []
                self.early = []
                self.sent = 0
                await self.publish_meta()
            if self.cmds:
                await self._run_commands()
                continue
            if self.sent < self.buf.pending() and len(self.pids) < _WINDOW:
                self.buf.peek(self.sent, rec)
                try:
                    pid = await self.mq.publish(self.t_state, self.payload(rec), qos=1)
                except OSError:
                    await asyncio.sleep_ms(100)
                    continue
                if self.connected.is_set():
                    self.pids.append(pid)
                    self.sent += 1
                continue
            self.kick.clear()
            await self.kick.wait()

    # --- commands -------------------------------------------------------------------------
    async def _run_commands(self):
        while self.cmds:
            msg, retained = self.cmds.pop(0)
            if msg == "__ha":
                await asyncio.sleep_ms(500)  # let Home Assistant subscribe first
                await self.publish_meta(True)
                continue
            from . import cmds

            try:
                await cmds.run(self, msg, retained)
            except OSError as e:
                log.warn("cmd", "could not answer: %s" % e)
            finally:
                cmds = None
                unload("cmds")
                unload("config")

    # --- supervision ----------------------------------------------------------------------
    async def _housekeeping(self):
        # One task, once a second: watchdog, heap statistics, link sanity, NTP, periodic meta.
        wdt = machine.WDT(timeout=_WDT_MS)
        limit = 3 * self.interval_ms + 20000
        n = 0
        ntp_due = 0
        while True:
            # Fed only while the sampler makes progress, not on publishes: a dead broker is fine,
            # a stuck event loop is not.
            if time.ticks_diff(time.ticks_ms(), self.beat) < limit:
                wdt.feed()
            # Collecting every second keeps fragmentation low and measures the live heap.
            gc.collect()
            used = gc.mem_alloc()
            if used > self.heap_peak:
                self.heap_peak = used
            n += 1
            if n == _STABLE_S:
                clear_bootfail()
            wifi_up = self.wifi.isconnected()
            if self.mq.isconnected() and not wifi_up:
                self.mq.close()  # the socket may take minutes to notice a dead link
            if wifi_up and n >= ntp_due:
                ntp_due = n + (_NTP_EVERY_S if self.ntp() else 15)
            if self.cfg["sleep"]["deep"] and not self.stay_awake:
                log.info("app", "stay_awake cleared: back to deep sleep")
                self.buf.sync()
                machine.deepsleep(1000)
            if n % _META_EVERY_S == 0 and self.connected.is_set():
                try:
                    await self.publish_meta()
                except OSError:
                    pass
            await asyncio.sleep_ms(1000)

    def ntp(self):
        try:
            import ntptime

            ntptime.settime()
        except Exception as e:  # OSError on timeout; some ports raise OverflowError
            log.debug("ntp", "failed: %s" % e)
            return False
        if not self.buf.flags & FLAG_NTP:
            log.info("ntp", "clock set")
            self.buf.flags |= FLAG_NTP
            self.buf.save_rtc()
        return True

    async def run(self):
        from .wifi import WiFi

        c = self.cfg
        w = c["wifi"]
        self.wifi = WiFi(w["ssid"], w["password"], w["hostname"] or "humigraph-" + c["device"])
        self.mq = self._make_client()
        log.info("app", "humigraph %s on %s/%s: %s on GPIO%d every %s s, boot %d, reset %s, %d buffered"
                 % (VERSION, c["site"], c["device"], c["sensor"]["model"].upper(),
                    c["sensor"]["pin"], c["sensor"]["interval"], self.buf.boot,
                    RESETS.get(self.cause, "unknown"), self.buf.pending()))
        asyncio.create_task(self.wifi.run())
        asyncio.create_task(self._link())
        asyncio.create_task(self._publisher())
        if c["sleep"]["deep"]:
            from .deep import cycle

            await cycle(self)  # returns only when a stay_awake command keeps the board up
            cycle = None
            unload("deep")
        asyncio.create_task(self._housekeeping())
        await self._sampler()


def clear_bootfail():
    import os

    try:
        os.remove(".bootfail")
    except OSError:
        pass
