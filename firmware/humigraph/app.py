# The application: asyncio tasks for sampling, Wi-Fi, the MQTT link, publishing, commands and the
# watchdog. Sampling never waits on the network: readings go to the buffer, the publisher drains
# it whenever the broker is reachable, and a reading leaves the buffer only on its PUBACK.
import gc
import json
import time

import asyncio
import machine
from micropython import const

from . import VERSION, config, log
from .buffer import FLAG_NTP, REC, Buffer, unpack
from .sensor import ERRORS, OK, Sensor

_WINDOW = const(8)  # QoS 1 publishes in flight at once
_WDT_MS = const(30000)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_META_EVERY_MS = const(300000)
_STABLE_MS = const(60000)  # running this long clears the failed-boot counter
_NTP_EVERY_MS = const(6 * 3600 * 1000)
_BOOTFAIL = ".bootfail"
_BOOTCOUNT = ".boot"
# The ESP32 port counts time from 2000, the unix port from 1970.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_MODELS = ("dht11", "dht22", "am2302")
_RESETS = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deep_sleep", 5: "soft"}
_CMDS = ("read", "interval", "reboot", "announce", "ping", "set", "stay_awake")
_LIVE_KEYS = ("log.level", "sensor.interval", "ha.discovery")


def _tenths(v):
    return "%s%d.%d" % ("-" if v < 0 else "", abs(v) // 10, abs(v) % 10)


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _write_int(path, v):
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
        self.t_cmd = self.base + "/cmd"
        self.interval_ms = int(s["interval"] * 1000)
        self.sensor = Sensor(s["model"], s["pin"])
        self.model_code = _MODELS.index(s["model"])
        b = cfg["buffer"]
        self.buf = Buffer(b["max"], b["batch"], rtc=machine.RTC())
        if reset_cause == 4 and self.buf.restore_rtc():
            pass  # a deep-sleep wake continues the same boot
        else:
            kept = reset_cause != 1 and self.buf.restore_rtc()  # staged readings survive resets
            self.buf.boot = _read_int(_BOOTCOUNT) + 1
            self.buf.seq = 0
            if not kept:
                self.buf.flags = 0
            _write_int(_BOOTCOUNT, self.buf.boot)
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
        self.last_err = err
        if err == OK:
            log.debug("sensor", "seq %d: %s C %s %%" % (seq, _tenths(sn.t), _tenths(sn.rh)))
        self.kick.set()
        return seq, err

    def payload(self, rec):
        boot, seq, ts, ms, up, t, rh, err, sensor = unpack(rec)
        ok = err == OK
        return '{"v":1,"dev":"%s","boot":%d,"seq":%d,"ts":%s,"up":%d,"t":%s,"rh":%s,"ok":%s,"err":%s,"sensor":"%s"}' % (
            self.cfg["device"], boot, seq, "%d.%03d" % (ts, ms) if ts else "null", up,
            _tenths(t) if ok else "null", _tenths(rh) if ok else "null", "true" if ok else "false",
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
            self.mq = mq = self._make_client()
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
                backoff = _BACKOFF_MIN_MS
                try:
                    await self._on_connect(mq)
                except (OSError, Exception) as e:
                    log.warn("mqtt", "setup after connect failed: %s" % e)
                    mq.close()
                if mq.isconnected():
                    self.connected.set()
                    self.kick.set()
                    await mq.wait_down()
                self.connected.clear()
                self.pids = []
                self.early = []
                self.sent = 0
                log.warn("mqtt", "connection to %s:%d lost; %d readings buffered"
                         % (m["host"], m["port"], self.buf.pending()))
                continue
            await asyncio.sleep_ms(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)

    async def _on_connect(self, mq):
        m = self.cfg["mqtt"]
        log.info("mqtt", "connected to %s:%d as humigraph-%s; %d readings to send"
                 % (m["host"], m["port"], self.cfg["device"], self.buf.pending()))
        await mq.publish(self.t_status, "online", retain=True, qos=1)
        await mq.subscribe(self.t_cmd, 1)
        if self.cfg["ha"]["discovery"]:
            await mq.subscribe(self.cfg["ha"]["prefix"] + "/status", 1)
            await self.announce()
        else:
            await self.publish_meta()

    async def announce(self):
        if self.cfg["ha"]["discovery"]:
            from .ha import discovery

            topic = "%s/device/%s/config" % (self.cfg["ha"]["prefix"], self.cfg["device"])
            await self.mq.publish(topic, discovery(self.cfg, self.base, self.cfg["sensor"]["model"]),
                                  retain=True, qos=1)
            gc.collect()
        await self.publish_meta()

    def meta(self):
        s, sn, b = self.cfg["sensor"], self.sensor, self.buf
        e = sn.errors
        return json.dumps({
            "fw": VERSION, "sensor": s["model"], "pin": s["pin"], "interval": s["interval"],
            "reset": _RESETS.get(self.cause, "unknown"), "free": gc.mem_free(),
            "buffered": b.pending(), "dropped": b.dropped, "rssi": self.wifi.rssi() if self.wifi else None,
            "boot": b.boot, "reads": sn.reads,
            "errors": {"timeout": e[1], "checksum": e[2], "implausible": e[3], "not_ready": e[4]},
            "flash_writes": b.writes, "deep_sleep": self.cfg["sleep"]["deep"],
            "ntp": bool(b.flags & FLAG_NTP),
        })

    async def publish_meta(self):
        if self.mq and self.mq.isconnected():
            await self.mq.publish(self.base + "/meta", self.meta(), retain=True, qos=1)

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
                await self.announce()
                continue
            try:
                await self._command(msg, retained)
            except OSError as e:
                log.warn("cmd", "could not answer: %s" % e)

    async def _ack(self, cid, ok, result=None, error=None):
        d = {"id": cid, "ok": ok}
        if ok:
            d["result"] = result
        else:
            d["error"] = error
            log.warn("cmd", "refused: %s" % error)
        await self.mq.publish(self.base + "/ack", json.dumps(d), qos=1)

    async def _command(self, msg, retained):
        try:
            c = json.loads(msg)
            if not isinstance(c, dict):
                raise ValueError
        except ValueError:
            await self._ack(None, False, error="not a JSON object: %r; send "
                            "{\"id\": \"1\", \"cmd\": \"ping\"}" % bytes(msg[:60]))
            return
        cid = c.get("id")
        cmd = c.get("cmd")
        if cid is not None and cid in self.seen_ids:
            return  # a QoS 1 redelivery
        if cid is not None:
            self.seen_ids.append(cid)
            if len(self.seen_ids) > 8:
                self.seen_ids.pop(0)
        if cmd not in _CMDS:
            await self._ack(cid, False, error="unknown cmd %r; use one of %s" % (cmd, ", ".join(_CMDS)))
            return
        if retained and cmd != "stay_awake":
            log.warn("cmd", "ignored retained %r (only stay_awake may be retained)" % cmd)
            return
        log.info("cmd", "%s (id %s)" % (cmd, cid))
        if cmd == "ping":
            await self._ack(cid, True, {"pong": True, "up": log.uptime_ms(), "free": gc.mem_free(),
                                        "buffered": self.buf.pending()})
        elif cmd == "read":
            seq, err = await self.sample()
            sn = self.sensor
            await self._ack(cid, True, {"boot": self.buf.boot, "seq": seq, "ok": err == OK,
                                        "err": ERRORS[err],
                                        "t": sn.t / 10 if err == OK else None,
                                        "rh": sn.rh / 10 if err == OK else None})
        elif cmd == "announce":
            await self.announce()
            await self._ack(cid, True, "announced")
        elif cmd == "reboot":
            await self._ack(cid, True, "rebooting")
            await asyncio.sleep_ms(300)  # let the ack's PUBACK through
            self.buf.sync()
            log.warn("app", "reboot requested over MQTT")
            machine.reset()
        elif cmd == "stay_awake":
            self.stay_awake = bool(c.get("value", True))
            await self._ack(cid, True, {"stay_awake": self.stay_awake})
        else:
            if cmd == "interval":
                key, value = "sensor.interval", c.get("value")
            else:
                key, value = c.get("key"), c.get("value")
                if not isinstance(key, str):
                    await self._ack(cid, False, error="set needs \"key\" (e.g. \"log.level\") and \"value\"")
                    return
            if "password" in key:
                shown = "***"
            else:
                shown = value
            try:
                new = config.with_value(self.cfg, key, value)
            except config.ConfigError as e:
                await self._ack(cid, False, error=str(e))
                return
            config.save(new)
            self.cfg = new
            live = key in _LIVE_KEYS
            if key == "sensor.interval":
                self.interval_ms = int(new["sensor"]["interval"] * 1000)
            elif key == "log.level":
                log.set_level(new["log"]["level"])
            log.info("cmd", "%s = %s saved%s" % (key, shown, "" if live else "; reboot to apply"))
            await self._ack(cid, True, {"key": key, "value": shown, "reboot": not live})
            if live:
                await self.publish_meta()

    # --- supervision ----------------------------------------------------------------------
    async def _watchdog(self):
        wdt = machine.WDT(timeout=_WDT_MS)
        started = time.ticks_ms()
        cleared = False
        limit = 3 * self.interval_ms + 20000
        while True:
            # Fed only while the sampler makes progress, not on publishes: a dead broker is fine,
            # a stuck event loop is not.
            if time.ticks_diff(time.ticks_ms(), self.beat) < limit:
                wdt.feed()
            if not cleared and time.ticks_diff(time.ticks_ms(), started) > _STABLE_MS:
                clear_bootfail()
                cleared = True
            if self.mq and self.mq.isconnected() and not self.wifi.isconnected():
                self.mq.close()  # the socket may take minutes to notice a dead link
            await asyncio.sleep_ms(1000)

    async def _ntp(self):
        while True:
            await self.wifi.up.wait()
            try:
                import ntptime

                ntptime.settime()
                if not self.buf.flags & FLAG_NTP:
                    log.info("ntp", "clock set: %d" % (time.time() + _EPOCH))
                self.buf.flags |= FLAG_NTP
                self.buf.save_rtc()
                await asyncio.sleep_ms(_NTP_EVERY_MS)
            except Exception as e:  # OSError on timeout; some ports raise OverflowError
                log.debug("ntp", "failed: %s" % e)
                await asyncio.sleep_ms(15000)

    async def _meta(self):
        while True:
            await asyncio.sleep_ms(_META_EVERY_MS)
            try:
                await self.publish_meta()
            except OSError:
                pass

    async def run(self):
        from .wifi import WiFi

        w = self.cfg["wifi"]
        self.wifi = WiFi(w["ssid"], w["password"], w["hostname"] or "humigraph-" + self.cfg["device"])
        log.info("app", "humigraph %s on %s/%s: %s on GPIO%d every %s s, boot %d, reset %s, %d buffered"
                 % (VERSION, self.cfg["site"], self.cfg["device"], self.cfg["sensor"]["model"].upper(),
                    self.cfg["sensor"]["pin"], self.cfg["sensor"]["interval"], self.buf.boot,
                    _RESETS.get(self.cause, "unknown"), self.buf.pending()))
        asyncio.create_task(self.wifi.run())
        asyncio.create_task(self._link())
        asyncio.create_task(self._publisher())
        asyncio.create_task(self._ntp())
        if self.cfg["sleep"]["deep"]:
            await self._deep_cycle()
        asyncio.create_task(self._meta())
        asyncio.create_task(self._watchdog())
        await self._sampler()

    async def _deep_cycle(self):
        # Wake, read, connect, publish everything buffered, sleep. A retained stay_awake command
        # (read on connect) keeps the board up for maintenance.
        t0 = time.ticks_ms()
        awake_ms = int(self.cfg["sleep"]["awake"] * 1000)
        await self.sample()
        while time.ticks_diff(time.ticks_ms(), t0) < awake_ms:
            if self.connected.is_set() and self.buf.pending() == 0 and not self.cmds:
                await asyncio.sleep_ms(300)  # a retained stay_awake arrives right after SUBACK
                if not self.cmds:
                    break
            await asyncio.sleep_ms(100)
        if self.stay_awake:
            log.info("app", "stay_awake set: not sleeping until it is cleared")
            return
        clear_bootfail()
        self.buf.sync()
        if self.mq and self.mq.isconnected():
            await self.mq.disconnect()
        sleep_ms = max(1000, self.interval_ms - time.ticks_diff(time.ticks_ms(), t0))
        log.info("app", "deep sleep for %d ms, %d readings buffered" % (sleep_ms, self.buf.pending()))
        machine.deepsleep(sleep_ms)


def clear_bootfail():
    import os

    try:
        os.remove(_BOOTFAIL)
    except OSError:
        pass


_app = None


def status():
    """REPL helper: what the board is doing."""
    a = _app
    if a is None:
        print("app not started (safe mode?). Fix config with setkey('key', value), then start()")
        return
    b, sn = a.buf, a.sensor
    print("device %s/%s  boot %d  seq %d  uptime %d s" % (a.cfg["site"], a.cfg["device"], b.boot,
                                                           b.seq, log.uptime_ms() // 1000))
    print("sensor %s GPIO%d every %s s: last %s C %s %%, last error %s, errors %s"
          % (a.cfg["sensor"]["model"], a.cfg["sensor"]["pin"], a.cfg["sensor"]["interval"],
             _tenths(sn.t), _tenths(sn.rh), ERRORS[a.last_err], sn.errors[1:]))
    print("wifi %s  mqtt %s  buffered %d (flash %d)  dropped %d  published %d  free %d"
          % ("up" if a.wifi and a.wifi.isconnected() else "down",
             "connected" if a.connected.is_set() else "down", b.pending(), b.pending_flash(),
             b.dropped, a.published, gc.mem_free()))


def read():
    """REPL helper: one reading now, printed (not published)."""
    cfg = config.load()
    sn = Sensor(cfg["sensor"]["model"], cfg["sensor"]["pin"])
    err = asyncio.run(sn.read())
    if err == OK:
        print("%s C  %s %%" % (_tenths(sn.t), _tenths(sn.rh)))
    else:
        print("read failed: %s" % ERRORS[err])


def setkey(key, value):  # noqa: A001 - the REPL name users expect
    """REPL helper: validates and saves one config key, e.g. setkey('sensor.pin', 4)."""
    try:
        cfg = config.load()
    except config.ConfigError:
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
        new = config.validate(cfg)
    except config.ConfigError as e:
        print("not saved: %s" % e)
        return
    config.save(new)
    print("saved %s; start() or machine.reset() to apply" % key)


def start():
    """Runs the app: safe mode on a bad config or after repeated failed boots."""
    global _app
    cause = machine.reset_cause()
    try:
        cfg = config.load()
    except config.ConfigError as e:
        log.error("config", "%s -- safe mode: app not started; fix it with setkey('key', value) "
                  "or `humigraph flash --config`, then machine.reset()" % e)
        return
    if cfg["sleep"]["deep"] and cause != 4 and cfg["sleep"]["window"]:
        log.info("app", "deep-sleep board: Ctrl-C within %s s for the REPL" % cfg["sleep"]["window"])
        time.sleep_ms(int(cfg["sleep"]["window"] * 1000))
    fails = _read_int(_BOOTFAIL) + 1 if cause != 4 else 0
    if fails > 3:
        log.error("app", "%d failed boots in a row -- safe mode: app not started; see the errors "
                  "above, then start() or remove %s and machine.reset()" % (fails - 1, _BOOTFAIL))
        return
    if cause != 4:
        _write_int(_BOOTFAIL, fails)
    asyncio.new_event_loop()  # start() again after Ctrl-C needs a fresh loop
    _app = App(cfg, cause)
    try:
        asyncio.run(_app.run())
    except KeyboardInterrupt:
        _app.buf.sync()
        log.info("app", "stopped by Ctrl-C; REPL helpers: status(), read(), setkey(key, value), start()")
    except Exception as e:
        import sys

        sys.print_exception(e)
        log.error("app", "crashed (%s); rebooting in 5 s" % e)
        try:
            _app.buf.sync()
        except Exception:
            pass
        time.sleep_ms(5000)
        machine.reset()
