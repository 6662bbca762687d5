# Minimal asyncio MQTT 3.1.1 client (QoS 0 and 1) for the humigraph firmware.
#
# Two layers: pure packet encoders/decoders (no IO; byte-exact tests run on MicroPython and
# CPython) and MQTTClient, which owns one connection. The reconnect policy (backoff) is the app's:
# connect() succeeds or raises, wait_down() says when to try again.
from micropython import const
import asyncio
import struct
import time
from errno import ECONNRESET, ENOTCONN, ETIMEDOUT

_PBUF = const(320)  # fixed header + topic + a reading's JSON: one write, one TCP segment
_MAX_RL = const(268435455)  # the largest remaining length a 4-byte varint carries


class MQTTError(Exception):
    # code: CONNACK return code, 0x80 for a refused subscription, -1 for a protocol violation
    def __init__(self, code=-1, msg="protocol error"):
        super().__init__("%s (%d)" % (msg, code))
        self.code = code


# ---- protocol layer: pure functions; str or any buffer accepted for topics and payloads ----------

def _b(s):
    return s.encode() if isinstance(s, str) else s


def _s(s):  # a length-prefixed string/binary field
    s = _b(s)
    if len(s) > 0xFFFF:
        raise ValueError("field too long")
    return struct.pack("!H", len(s)) + s


def _check_pid(pid):
    if not 0 < pid < 0x10000:
        raise ValueError("packet id must be 1..65535")


def _put_rl(buf, off, n):
    # remaining length: 7 bits a byte, least significant first, bit 7 = "more follows"
    if not 0 <= n <= _MAX_RL:
        raise ValueError("packet too long")
    while n > 0x7F:
        buf[off] = n & 0x7F | 0x80
        n >>= 7
        off += 1
    buf[off] = n
    return off + 1


def _pkt(first, body):
    h = bytearray(5)
    h[0] = first
    return bytes(h[:_put_rl(h, 1, len(body))]) + body


def connect_packet(client_id, keepalive=60, clean=True, user=None, password=None,
                   will_topic=None, will_msg=None, will_qos=0, will_retain=False):
    if not 0 <= keepalive <= 0xFFFF or not 0 <= will_qos <= 2:
        raise ValueError("bad keepalive or will qos")
    f = 2 if clean else 0
    p = _s(client_id)
    if will_topic is not None:
        if will_msg is None:
            raise ValueError("will needs a message")
        f |= 4 | will_qos << 3 | (0x20 if will_retain else 0)
        p += _s(will_topic) + _s(will_msg)
    if user is not None:
        f |= 0x80
        p += _s(user)
    if password is not None:
        if user is None:
            raise ValueError("password needs a user name")  # MQTT-3.1.2-22
        f |= 0x40
        p += _s(password)
    # protocol name "MQTT", level 4 (= 3.1.1), connect flags, keepalive
    return _pkt(0x10, b"\x00\x04MQTT\x04" + struct.pack("!BH", f, keepalive) + p)


def publish_header_into(buf, topic, msglen, qos=0, retain=False, pid=0, dup=False):
    # Fixed header + topic + packet id of a PUBLISH into buf (needs len(topic) + 9 bytes);
    # returns the length. The payload follows on the wire: it never has to be copied.
    if qos:
        _check_pid(pid)
    elif dup:
        raise ValueError("DUP must be 0 for QoS 0")  # MQTT-3.3.1-2
    if not 0 <= qos <= 2:
        raise ValueError("qos must be 0..2")
    n = len(topic)
    buf[0] = 0x30 | (8 if dup else 0) | qos << 1 | (1 if retain else 0)
    off = _put_rl(buf, 1, 2 + n + msglen + (2 if qos else 0))
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    off += 2 + n
    buf[off - n:off] = topic
    if qos:
        buf[off] = pid >> 8
        buf[off + 1] = pid & 0xFF
        off += 2
    return off


def publish_packet(topic, msg, qos=0, retain=False, pid=0, dup=False):
    topic = _b(topic)
    msg = _b(msg)
    buf = bytearray(len(topic) + 9)
    return bytes(buf[:publish_header_into(buf, topic, len(msg), qos, retain, pid, dup)]) + msg


def puback_packet(pid):
    _check_pid(pid)
    return struct.pack("!BBH", 0x40, 2, pid)


def subscribe_packet(pid, topic, qos):
    _check_pid(pid)  # 0x82: SUBSCRIBE's reserved flag bits are 0010
    return _pkt(0x82, struct.pack("!H", pid) + _s(topic) + bytes((qos,)))


def pingreq_packet():
    return b"\xc0\x00"


def disconnect_packet():
    return b"\xe0\x00"


def decode_remaining_length(buf, off=1):
    # -> (length, offset past the varint); MQTTError if truncated or longer than 4 bytes
    n = shift = 0
    while True:
        if off >= len(buf) or shift > 21:
            raise MQTTError(-1, "bad remaining length")
        b = buf[off]
        off += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, off
        shift += 7


# Decoders take the body (what follows the fixed header) of the packet type their name says.

def decode_connack(body):  # -> (session_present, return_code)
    if len(body) != 2 or body[0] & 0xFE:
        raise MQTTError(-1, "bad CONNACK")
    return bool(body[0]), body[1]


def decode_puback(body):  # -> packet id
    if len(body) != 2:
        raise MQTTError(-1, "bad PUBACK")
    return body[0] << 8 | body[1]


def decode_suback(body):  # -> (packet id, return code of the first topic: QoS granted or 0x80)
    if len(body) < 3:
        raise MQTTError(-1, "bad SUBACK")
    return body[0] << 8 | body[1], body[2]


def decode_publish(flags, body):
    # flags: low nibble of the fixed header. -> (topic, msg, qos, retain, dup, pid); topic and msg
    # are memoryview slices of body (no copy), pid is 0 for QoS 0.
    qos = flags >> 1 & 3
    if qos == 3 or len(body) < 2:
        raise MQTTError(-1, "bad PUBLISH")
    off = 2 + (body[0] << 8 | body[1])
    end = off + (2 if qos else 0)
    if end > len(body):
        raise MQTTError(-1, "bad PUBLISH")
    pid = body[off] << 8 | body[off + 1] if qos else 0
    if qos and not pid:
        raise MQTTError(-1, "PUBLISH with packet id 0")
    body = memoryview(body)
    return body[2:off], body[end:], qos, bool(flags & 1), bool(flags & 8), pid


# ---- connection ----------------------------------------------------------------------------------

class MQTTClient:
    on_message = None  # callable(topic: bytes, msg: bytes, retained: bool), from the reader task
    on_puback = None  # callable(pid: int), from the reader task

    def __init__(self, client_id, server, port=0, *, user=None, password=None, keepalive=60,
                 ssl=None, will=None, clean=True, max_inflight=8, ack_timeout_ms=5000,
                 retries=2, log=None, rx_buf=512):
        w = will or (None, None, False, 0)  # (topic, msg, retain, qos)
        # built (and validated) once: CONNECT is the same on every reconnect
        self._conn = connect_packet(client_id, keepalive, clean, user, password, w[0], w[1],
                                    w[3], w[2])
        self._addr = (server, port or (8883 if ssl else 1883))
        self._ssl = ssl
        self._ka = keepalive * 1000
        self._ack = ack_timeout_ms
        self._retries = retries
        self._max = max_inflight
        self._logf = log
        self._q = {}  # QoS 1 in flight: pid -> [topic, msg, retain, sent ms, resends]
        self._pid = self._sub = self._rc = self._rx = self._tx = 0
        self._rbuf = bytearray(max(16, rx_buf))  # incoming packets; larger PUBLISHes are dropped
        self._rmv = memoryview(self._rbuf)
        self._pbuf = bytearray(_PBUF)  # outgoing PUBLISH, written only while holding _wlock
        self._pmv = memoryview(self._pbuf)
        self._s = self._tasks = self._wtask = None
        self._up = self._wcancel = self._ping = False
        # Whole packets must not interleave, and asyncio lets one task at a time wait to write.
        self._wlock = asyncio.Lock()
        self._ev = asyncio.Event()  # set on every PUBACK and on connection loss

    def _log(self, lvl, msg):
        if self._logf:
            self._logf(lvl, "mqtt", msg)

    def isconnected(self):
        return self._up

    def inflight(self):
        return len(self._q)

    async def connect(self, timeout_ms=10000):
        # TCP (+TLS), CONNECT, CONNACK; MQTTError(code) if refused, OSError on network trouble
        if self._up:
            return
        try:
            await asyncio.wait_for_ms(self._open(), timeout_ms)
        except BaseException as e:  # cancellation included: never leak the socket
            self._close()
            if isinstance(e, asyncio.TimeoutError):
                raise OSError(ETIMEDOUT)
            raise
        self._up = True
        self._rx = self._tx = time.ticks_ms()
        self._ping = False
        self._tasks = (asyncio.create_task(self._reader()), asyncio.create_task(self._housekeeping()))
        self._log("D", "connected to %s:%d" % self._addr)  # the app logs the full line

    async def _open(self):
        # MicroPython's reader and writer are one Stream object: keep the writer, read from it too
        self._s = s = (await asyncio.open_connection(*self._addr, ssl=self._ssl or None))[1]
        s.write(self._conn)
        await s.drain()
        await self._readn(4)
        b = self._rbuf
        if b[0] != 0x20 or b[1] != 2:
            raise MQTTError(-1, "expected CONNACK")
        if decode_connack(b[2:4])[1]:
            raise MQTTError(b[3], "connection refused")

    def _close(self):
        s = self._s
        self._s = None
        if s:
            try:
                s.s.close()  # Stream.close() is a no-op on some versions; socket close is idempotent
            except Exception:
                s.close()

    async def _readn(self, n, off=0):
        # readinto returns what one recv gave (None on a TLS want-read): loop until n bytes
        n += off
        while off < n:
            if not self._s:
                raise OSError(ENOTCONN)
            k = await self._s.readinto(self._rmv[off:n])
            if k == 0:
                raise OSError(ECONNRESET)  # EOF: the broker closed the connection
            off += k or 0

    async def _send(self, pkt, topic=None, msg=b"", retain=False, pid=0, dup=False):
        # One whole packet: pkt, or (pkt None) a PUBLISH built in _pbuf, QoS 1 if pid else 0.
        async with self._wlock:
            if not self._up or pid and pid not in self._q:
                # Down, or the entry went with a connection lost while we waited for the lock
                # (a resend finds its entry gone when the PUBACK came meanwhile).
                if dup:
                    return
                raise OSError(ENOTCONN)
            s = self._s
            me = self._wtask = asyncio.current_task()
            try:
                if pkt is None:
                    b = self._pbuf
                    k = publish_header_into(b, topic, len(msg), 1 if pid else 0, retain, pid, dup)
                    n = k + len(msg)
                    if n <= _PBUF:  # one write: write-write-read stalls on Nagle + delayed ACK
                        b[k:n] = msg
                        s.write(self._pmv[:n])
                    else:
                        s.write(self._pmv[:k])
                        s.write(msg)
                else:
                    s.write(pkt)
                await s.drain()
            except BaseException as e:
                # Interrupted mid-packet the stream is unusable: end the connection.
                ours = self._wcancel
                self._wcancel = False
                self._down("write: %r" % (e,))
                if ours:  # _down() cancelled us to unblock a stalled drain(): that is an OSError
                    raise OSError(ECONNRESET)
                raise
            finally:
                if self._wtask is me:
                    self._wtask = None
            self._tx = time.ticks_ms()

    def _next_pid(self):
        # sequential, so a late duplicate PUBACK cannot match a reused id; skips ids in use
        pid = self._pid
        while True:
            pid = pid % 0xFFFF + 1
            if pid != self._sub and pid not in self._q:
                self._pid = pid
                return pid

    async def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 returns the packet id without waiting for the PUBACK (that comes to on_puback);
        # waits only while max_inflight publishes are unacknowledged. OSError when not connected.
        topic = _b(topic)
        msg = _b(msg)
        if len(topic) > _PBUF - 9 or not 0 <= qos <= 1:
            raise ValueError("topic too long or qos not 0/1")
        pid = 0
        if qos:
            while self._up and len(self._q) >= self._max:  # window full: wait for a PUBACK
                self._ev.clear()
                await self._ev.wait()
            if not self._up:
                raise OSError(ENOTCONN)
            pid = self._next_pid()
            # kept by reference for resends: do not mutate msg until it is acknowledged
            self._q[pid] = [topic, msg, retain, time.ticks_ms(), 0]
        await self._send(None, topic, msg, retain, pid)
        return pid

    async def subscribe(self, topic, qos=1, timeout_ms=5000):
        # Waits for the SUBACK: MQTTError(0x80) if refused, OSError on timeout. One at a time.
        if not 0 <= qos <= 1:
            raise ValueError("qos must be 0 or 1")
        self._sub = pid = self._next_pid()
        t0 = time.ticks_ms()
        try:
            await self._send(subscribe_packet(pid, topic, qos))
            while self._sub:  # cleared by the reader on SUBACK; rare enough to poll for
                if not self._up:
                    raise OSError(ENOTCONN)
                if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                    raise OSError(ETIMEDOUT)
                await asyncio.sleep_ms(10)
        finally:
            self._sub = 0
        if self._rc & 0x80:
            raise MQTTError(self._rc, "subscription refused")

    async def wait_down(self):
        while self._up:
            self._ev.clear()
            await self._ev.wait()

    async def disconnect(self):
        if self._up:
            try:
                await self._send(b"\xe0\x00")  # clean DISCONNECT: the broker drops the will
            except OSError:
                pass
        self._down("disconnected", "I")

    def close(self):
        self._down("closed", "I")  # no DISCONNECT: the broker publishes the will

    def _down(self, why, lvl="W"):
        # Idempotent teardown from any task (or none): stop our tasks, close the socket, forget
        # in-flight ids (the app republishes what was not acknowledged), wake every waiter.
        if self._up:
            self._log(lvl, why)
        self._up = False
        try:
            cur = asyncio.current_task()
        except Exception:  # not called from a task
            cur = None
        w = self._wtask
        if w and w is not cur:
            self._wcancel = True  # drain() on a closed socket never wakes up: cancel the writer
            w.cancel()
        for t in self._tasks or ():
            if t is not cur and t is not w:
                t.cancel()
        self._tasks = self._wtask = None
        self._close()
        self._q.clear()
        self._ev.set()

    async def _reader(self):
        b = self._rbuf
        size = len(b)
        try:
            while True:
                await self._readn(2)
                k = 2
                while b[k - 1] & 0x80:  # the remaining length goes on
                    if k > 4:
                        raise MQTTError(-1, "bad remaining length")
                    await self._readn(1, k)
                    k += 1
                t = b[0]
                n = decode_remaining_length(b)[0]
                self._rx = time.ticks_ms()
                self._ping = False
                k = min(n, size)
                await self._readn(k)
                body = self._rmv[:k]
                if t & 0xF0 == 0x30:
                    topic, msg, qos, retain, _, pid = decode_publish(t & 0x0F, body)
                    if qos > 1:
                        raise MQTTError(-1, "QoS 2 not supported")
                    if n > k:
                        # Too big for the receive buffer: skip the rest to stay in sync and still
                        # ack it (a redelivery would be no smaller).
                        self._log("W", "dropped %d-byte message" % n)
                        n -= k
                        while n:
                            k = min(n, size)
                            await self._readn(k)
                            n -= k
                    elif self.on_message:
                        try:
                            self.on_message(bytes(topic), bytes(msg), retain)
                        except Exception as e:  # an app bug must not take the connection down
                            self._log("E", "on_message: %r" % (e,))
                    if qos:
                        await self._send(puback_packet(pid))
                elif n > k:
                    raise MQTTError(-1, "packet too long")
                elif t == 0x40:
                    pid = decode_puback(body)
                    if self._q.pop(pid, None):
                        self._ev.set()
                        if self.on_puback:
                            try:
                                self.on_puback(pid)
                            except Exception as e:
                                self._log("E", "on_puback: %r" % (e,))
                    # else: the second ack of a resent duplicate
                elif t == 0x90:
                    pid, rc = decode_suback(body)
                    if pid == self._sub:
                        self._rc = rc
                        self._sub = 0
                elif t != 0xB0 and (t != 0xD0 or n):  # UNSUBACK: ignored; PINGRESP: no body
                    raise MQTTError(-1, "unexpected packet 0x%02x" % t)
        except Exception as e:  # a dead socket or anything malformed: the app reconnects
            self._down("connection lost: %r" % (e,))

    async def _housekeeping(self):
        ka = self._ka
        # period fine enough for both the keepalive and the PUBACK deadline
        tick = max(20, min(1000, self._ack >> 2, ka >> 2 or 1000))
        try:
            while self._up:
                await asyncio.sleep_ms(tick)
                now = time.ticks_ms()
                if ka:
                    idle = time.ticks_diff(now, self._rx)
                    if idle >= ka:
                        self._down("no packet from the broker for %d ms" % idle)
                        return
                    # Ping when either direction idles for half the keepalive: the broker needs
                    # traffic once per keepalive, we need proof that it is still there.
                    if not self._ping and max(idle, time.ticks_diff(now, self._tx)) >= ka >> 1:
                        self._ping = True
                        await self._send(b"\xc0\x00")
                for pid in list(self._q):  # a copy: the table changes while we await
                    e = self._q.get(pid)
                    if e and time.ticks_diff(now, e[3]) >= self._ack:
                        if e[4] >= self._retries:
                            self._down("no PUBACK for pid %d after %d resends" % (pid, e[4]))
                            return
                        e[3] = now
                        e[4] += 1
                        self._log("W", "no PUBACK for pid %d, resending" % pid)
                        await self._send(None, e[0], e[1], e[2], pid, True)
        except Exception as e:
            self._down("housekeeping: %r" % (e,))
