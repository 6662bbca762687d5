# Minimal asyncio MQTT 3.1.1 client (QoS 0/1) for the humigraph firmware.
#
# Two layers: pure packet encoders/decoders (no IO, byte-exact testable on MicroPython and CPython)
# and MQTTClient, which owns one connection. Reconnect policy (backoff) belongs to the app: connect()
# either succeeds or raises, and wait_down() tells the app when to try again.
from micropython import const
import asyncio
import errno
import time

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # the low nibble of SUBSCRIBE is reserved and must be 0b0010
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
_MAX_RL = const(268435455)  # largest remaining length a 4-byte varint can carry
_PBUF = const(320)  # header + topic + a typical reading fit here: one write per publish

_PING_PKT = b"\xc0\x00"
_DISC_PKT = b"\xe0\x00"
_REFUSED = ("", "unacceptable protocol version", "identifier rejected", "server unavailable",
            "bad user name or password", "not authorized")

# wait_for_ms is MicroPython-only; CPython (host tests) and old ports take seconds.
_wait_for_ms = getattr(asyncio, "wait_for_ms", None) or (lambda aw, ms: asyncio.wait_for(aw, ms / 1000))


class MQTTError(Exception):
    # code: CONNACK return code, 0x80 for a refused subscription, -1 for a protocol violation
    def __init__(self, code=-1, msg=None):
        if msg is None:
            msg = ("connection refused: " + _REFUSED[code]) if 0 < code < 6 else "protocol error"
        super().__init__("%s (%d)" % (msg, code))
        self.code = code


# ---- protocol layer: pure functions ------------------------------------------------------------

def _b(s):
    # str -> UTF-8; buffers pass through uncopied
    return s.encode() if isinstance(s, str) else s


def _rl_size(n):
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def _put_rl(buf, off, n):
    # remaining length: 7 bits per byte, least significant group first, bit 7 = "more follows"
    if not 0 <= n <= _MAX_RL:
        raise ValueError("packet too long")
    while n > 0x7F:
        buf[off] = (n & 0x7F) | 0x80
        n >>= 7
        off += 1
    buf[off] = n
    return off + 1


def _put_str(buf, off, s):
    # UTF-8 string / binary data: 2-byte big-endian length prefix
    n = len(s)
    if n > 0xFFFF:
        raise ValueError("string too long")
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    buf[off + 2:off + 2 + n] = s
    return off + 2 + n


def _check_pid(pid):
    if not 0 < pid <= 0xFFFF:
        raise ValueError("packet id must be 1..65535")


def connect_packet(client_id, keepalive=60, clean=True, user=None, password=None,
                   will_topic=None, will_msg=None, will_qos=0, will_retain=False):
    cid = _b(client_id)
    flags = 0x02 if clean else 0
    n = 12 + len(cid)  # variable header (10) + client id
    if will_topic is not None:
        if will_msg is None or will_qos not in (0, 1, 2):
            raise ValueError("will needs a message and qos 0..2")
        will_topic = _b(will_topic)
        will_msg = _b(will_msg)
        flags |= 0x04 | will_qos << 3 | (0x20 if will_retain else 0)
        n += 4 + len(will_topic) + len(will_msg)
    if user is not None:
        user = _b(user)
        flags |= 0x80
        n += 2 + len(user)
    if password is not None:
        if user is None:
            raise ValueError("password needs a user name")  # MQTT-3.1.2-22
        password = _b(password)
        flags |= 0x40
        n += 2 + len(password)
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError("keepalive must be 0..65535 s")
    buf = bytearray(1 + _rl_size(n) + n)
    buf[0] = _CONNECT
    off = _put_rl(buf, 1, n)
    buf[off:off + 7] = b"\x00\x04MQTT\x04"  # protocol name, level 4 = 3.1.1
    buf[off + 7] = flags
    buf[off + 8] = keepalive >> 8
    buf[off + 9] = keepalive & 0xFF
    off = _put_str(buf, off + 10, cid)
    if will_topic is not None:
        off = _put_str(buf, off, will_topic)
        off = _put_str(buf, off, will_msg)
    if user is not None:
        off = _put_str(buf, off, user)
    if password is not None:
        _put_str(buf, off, password)
    return bytes(buf)


def publish_header_into(buf, topic, msglen, qos=0, retain=False, pid=0, dup=False):
    # Fixed header, topic and packet id of a PUBLISH into buf (needs len(topic) + 9 bytes);
    # returns its length. The payload follows on the wire, so it never has to be copied.
    if qos:
        _check_pid(pid)
    elif dup:
        raise ValueError("DUP must be 0 for QoS 0")  # MQTT-3.3.1-2
    if not 0 <= qos <= 2:
        raise ValueError("qos must be 0..2")
    buf[0] = _PUBLISH | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    off = _put_rl(buf, 1, 2 + len(topic) + msglen + (2 if qos else 0))
    off = _put_str(buf, off, topic)
    if qos:
        buf[off] = pid >> 8
        buf[off + 1] = pid & 0xFF
        off += 2
    return off


def publish_packet(topic, msg, qos=0, retain=False, pid=0, dup=False):
    topic = _b(topic)
    msg = _b(msg)
    buf = bytearray(len(topic) + 9 + len(msg))
    n = publish_header_into(buf, topic, len(msg), qos, retain, pid, dup)
    buf[n:n + len(msg)] = msg
    return bytes(memoryview(buf)[:n + len(msg)])


def puback_packet(pid):
    _check_pid(pid)
    return bytes((_PUBACK, 2, pid >> 8, pid & 0xFF))


def subscribe_packet(pid, topic, qos):
    _check_pid(pid)
    topic = _b(topic)
    buf = bytearray(len(topic) + 10)
    buf[0] = _SUBSCRIBE
    off = _put_rl(buf, 1, 5 + len(topic))
    buf[off] = pid >> 8
    buf[off + 1] = pid & 0xFF
    off = _put_str(buf, off + 2, topic)
    buf[off] = qos
    return bytes(memoryview(buf)[:off + 1])


def pingreq_packet():
    return _PING_PKT


def disconnect_packet():
    return _DISC_PKT


def decode_remaining_length(buf, off=1):
    # -> (length, offset just past the varint); MQTTError if truncated or longer than 4 bytes
    n = 0
    shift = 0
    while True:
        if off >= len(buf) or shift > 21:
            raise MQTTError(-1, "bad remaining length")
        b = buf[off]
        off += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, off
        shift += 7


def _split(pkt, first):
    # whole packet -> its body after checking type/flags byte and length
    if len(pkt) < 2 or pkt[0] & (0xF0 if first == _PUBLISH else 0xFF) != first:
        raise MQTTError(-1, "unexpected packet type")
    rl, off = decode_remaining_length(pkt, 1)
    if off + rl != len(pkt):
        raise MQTTError(-1, "length mismatch")
    return memoryview(pkt)[off:]


def _connack(body):  # -> (session_present, return_code)
    if len(body) != 2 or body[0] & 0xFE:
        raise MQTTError(-1, "bad CONNACK")
    return bool(body[0]), body[1]


def _pid(body):  # PUBACK / UNSUBACK body
    if len(body) != 2:
        raise MQTTError(-1, "bad ack length")
    return body[0] << 8 | body[1]


def _suback(body):  # -> (pid, return codes)
    if len(body) < 3:
        raise MQTTError(-1, "bad SUBACK")
    return body[0] << 8 | body[1], body[2:]


def decode_publish_body(flags, body):
    # flags: low nibble of the fixed header. Returns (topic, msg, qos, retain, dup, pid) with topic
    # and msg as memoryview slices of body (no copy); pid is 0 for QoS 0.
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


def decode_publish(pkt):
    # whole PUBLISH packet -> (topic bytes, msg bytes, qos, retain, dup, pid)
    t, m, qos, retain, dup, pid = decode_publish_body(pkt[0] & 0x0F, _split(pkt, _PUBLISH))
    return bytes(t), bytes(m), qos, retain, dup, pid


def decode_connack(pkt):
    return _connack(_split(pkt, _CONNACK))


def decode_puback(pkt):
    return _pid(_split(pkt, _PUBACK))


def decode_suback(pkt):
    pid, codes = _suback(_split(pkt, _SUBACK))
    return pid, list(codes)


# ---- connection ---------------------------------------------------------------------------------

class MQTTClient:
    on_message = None  # callable(topic: bytes, msg: bytes, retained: bool), from the reader task
    on_puback = None  # callable(pid: int)

    def __init__(self, client_id, server, port=0, *, user=None, password=None, keepalive=60,
                 ssl=None, will=None, clean=True, max_inflight=8, ack_timeout_ms=5000,
                 retries=2, log=None, rx_buf=1024):
        if max_inflight < 1 or not 0 <= keepalive <= 0xFFFF:
            raise ValueError("bad max_inflight or keepalive")
        self._cid = client_id
        self._server = server
        self._port = port or (8883 if ssl else 1883)
        self._user = user
        self._pw = password
        self._ka = keepalive
        self._ssl = ssl
        self._will = will  # (topic, msg, retain, qos)
        self._clean = clean
        self._max = max_inflight
        self._ack_ms = ack_timeout_ms
        self._retries = retries
        self._logf = log
        # housekeeping tick: fine enough for both the keepalive and the PUBACK deadline
        t = min(1000, ack_timeout_ms >> 2)
        self._tick = max(20, min(t, keepalive * 250) if keepalive else t)
        # QoS1 in-flight table as parallel fixed-size lists: tracking a publish allocates nothing
        self._ipid = [0] * max_inflight
        self._itopic = [None] * max_inflight
        self._imsg = [None] * max_inflight
        self._isent = [0] * max_inflight
        self._itries = bytearray(max_inflight)
        self._iret = bytearray(max_inflight)
        self._n = 0
        self._pid = 0
        self._rbuf = bytearray(max(rx_buf, 16))  # incoming packets; larger PUBLISHes are dropped
        self._rmv = memoryview(self._rbuf)
        self._pbuf = bytearray(_PBUF)  # outgoing publish, only touched while holding _wlock
        self._pmv = memoryview(self._pbuf)
        self._abuf = bytearray(b"\x40\x02\x00\x00")  # outgoing PUBACK, same
        self._s = None
        self._up = False
        self._rtask = self._ktask = self._wtask = None
        self._wcancel = False
        # Whole packets must not interleave, and asyncio allows one task waiting to write per socket.
        self._wlock = asyncio.Lock()
        self._slock = asyncio.Lock()
        self._down_ev = asyncio.Event()
        self._free_ev = asyncio.Event()
        self._sub_ev = asyncio.Event()
        self._sub_pid = 0
        self._sub_rc = 0
        self._last_rx = self._last_tx = 0
        self._ping_out = False

    def _log(self, lvl, msg):
        if self._logf is not None:
            self._logf(lvl, "mqtt", msg)

    def isconnected(self):
        return self._up

    def inflight(self):
        return self._n

    async def connect(self, timeout_ms=10000):
        if self._up:
            return
        self._down_ev.clear()
        self._free_ev.clear()
        try:
            await _wait_for_ms(self._open(), timeout_ms)
        except BaseException as e:  # incl. cancellation: never leak the socket
            s = self._s
            self._s = None
            if s is not None:
                s.close()
            if isinstance(e, asyncio.TimeoutError):
                raise OSError(errno.ETIMEDOUT)
            raise
        self._up = True
        self._last_rx = self._last_tx = time.ticks_ms()
        self._ping_out = False
        self._rtask = asyncio.create_task(self._reader())
        self._ktask = asyncio.create_task(self._housekeeping())
        self._log("I", "connected to %s:%d" % (self._server, self._port))

    async def _open(self):
        if self._ssl:
            s = (await asyncio.open_connection(self._server, self._port, ssl=self._ssl))[0]
        else:
            s = (await asyncio.open_connection(self._server, self._port))[0]
        self._s = s  # set early so connect() can close it on timeout
        w = self._will or (None, None, False, 0)
        s.write(connect_packet(self._cid, self._ka, self._clean, self._user, self._pw,
                               w[0], w[1], w[3], w[2]))
        await s.drain()
        await self._readn(4)
        if self._rbuf[0] != _CONNACK or self._rbuf[1] != 2:
            raise MQTTError(-1, "expected CONNACK")
        rc = _connack(self._rmv[2:4])[1]
        if rc:
            raise MQTTError(rc)

    async def _readn(self, n, off=0):
        # Stream.readinto returns what one recv gave (None on a TLS want-read): loop to n bytes
        s = self._s
        if s is None:
            raise OSError(errno.ENOTCONN)
        mv = self._rmv
        end = off + n
        while off < end:
            k = await s.readinto(mv[off:end])
            if k == 0:
                raise OSError(errno.ECONNRESET)  # EOF: the broker closed the connection
            if k:
                off += k

    def _check_up(self):
        if not self._up or self._s is None:
            raise OSError(errno.ENOTCONN)

    async def _write(self, a, b=None):
        # caller holds _wlock
        s = self._s
        me = asyncio.current_task()
        self._wtask = me
        try:
            s.write(a)
            if b:
                s.write(b)
            await s.drain()
        except asyncio.CancelledError:
            # Cancelled mid-drain the stream may hold half a packet: this connection is finished.
            ours = self._wcancel
            self._wcancel = False
            self._down("write interrupted")
            if ours:  # close() cancelled us to unblock a stalled write: the caller gets an OSError
                raise OSError(errno.ECONNRESET)
            raise
        except Exception as e:
            self._down("write failed: %r" % (e,))
            if isinstance(e, OSError):
                raise
            raise OSError(errno.ECONNRESET)
        finally:
            if self._wtask is me:
                self._wtask = None
        self._last_tx = time.ticks_ms()

    async def _send(self, pkt):
        async with self._wlock:
            self._check_up()
            await self._write(pkt)

    async def _send_publish(self, topic, msg, qos, retain, pid, dup):
        async with self._wlock:
            self._check_up()
            if len(topic) + 9 > _PBUF:  # rare long topic: build the packet on the heap
                await self._write(publish_packet(topic, msg, qos, retain, pid, dup))
                return
            n = publish_header_into(self._pbuf, topic, len(msg), qos, retain, pid, dup)
            if n + len(msg) <= _PBUF:
                # one write, one TCP segment: write-write-read stalls on Nagle + delayed ACK
                self._pbuf[n:n + len(msg)] = msg
                await self._write(self._pmv[:n + len(msg)])
            else:
                await self._write(self._pmv[:n], msg)

    def _next_pid(self):
        # sequential, so a late duplicate PUBACK cannot match a reused id; skip ids still in use
        pid = self._pid
        while True:
            pid = pid % 0xFFFF + 1
            if pid != self._sub_pid and pid not in self._ipid:
                self._pid = pid
                return pid

    async def publish(self, topic, msg, retain=False, qos=0):
        topic = _b(topic)
        msg = _b(msg)
        if len(topic) > 0xFFFF or len(msg) > _MAX_RL - 0x10004:
            raise ValueError("topic or message too long")
        if not qos:
            await self._send_publish(topic, msg, 0, retain, 0, False)
            return 0
        if qos != 1:
            raise ValueError("qos must be 0 or 1")
        while self._n >= self._max:  # window full: wait for a PUBACK (or the end of the connection)
            self._check_up()
            self._free_ev.clear()
            await self._free_ev.wait()
        self._check_up()
        pid = self._next_pid()
        i = self._ipid.index(0)
        self._ipid[i] = pid
        self._itopic[i] = topic  # kept by reference for resends: callers must not mutate msg
        self._imsg[i] = msg
        self._iret[i] = 1 if retain else 0
        self._itries[i] = 0
        self._isent[i] = time.ticks_ms()
        self._n += 1
        await self._send_publish(topic, msg, 1, retain, pid, False)
        return pid

    async def subscribe(self, topic, qos=1, timeout_ms=5000):
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        async with self._slock:  # one SUBSCRIBE at a time keeps SUBACK matching trivial
            self._check_up()
            pid = self._next_pid()
            self._sub_pid = pid
            self._sub_rc = -1
            self._sub_ev.clear()
            try:
                await self._send(subscribe_packet(pid, topic, qos))
                await _wait_for_ms(self._sub_ev.wait(), timeout_ms)
            except asyncio.TimeoutError:
                raise OSError(errno.ETIMEDOUT)
            finally:
                self._sub_pid = 0
            self._check_up()
            if self._sub_rc > 2:
                raise MQTTError(self._sub_rc, "subscription to %s refused" % (topic,))

    async def wait_down(self):
        if self._up:
            await self._down_ev.wait()

    async def disconnect(self):
        if self._up:
            try:
                await self._send(_DISC_PKT)  # a clean DISCONNECT: the broker discards the will
            except OSError:
                pass
        self._down("disconnected", "I")

    def close(self):
        self._down("closed", "I")

    def _down(self, why, lvl="W"):
        # Idempotent teardown, callable from any task (or none): stop our tasks, close the socket,
        # forget in-flight ids (the app republishes what was not acknowledged), wake every waiter.
        if self._s is None and not self._up:
            return
        if self._up:
            self._log(lvl, why)
        self._up = False
        try:
            cur = asyncio.current_task()
        except Exception:  # called outside the event loop
            cur = None
        w = self._wtask
        if w is not None and w is not cur:
            # a task stalled in drain() is never woken by closing the socket: cancel it instead
            self._wcancel = True
            w.cancel()
        for t in (self._rtask, self._ktask):
            if t is not None and t is not cur and t is not w:
                t.cancel()
        self._rtask = self._ktask = self._wtask = None
        s = self._s
        self._s = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass
        for i in range(self._max):
            self._ipid[i] = 0
            self._itopic[i] = self._imsg[i] = None
        self._n = 0
        self._down_ev.set()
        self._free_ev.set()
        self._sub_ev.set()

    async def _reader(self):
        buf = self._rbuf
        try:
            while True:
                await self._readn(2)
                k = 2
                while buf[k - 1] & 0x80:  # remaining length continues
                    if k == 5:
                        raise MQTTError(-1, "bad remaining length")
                    await self._readn(1, k)
                    k += 1
                b0 = buf[0]
                rl = decode_remaining_length(buf, 1)[0]
                self._last_rx = time.ticks_ms()
                self._ping_out = False
                if b0 & 0xF0 == _PUBLISH:
                    await self._rx_publish(b0, rl)
                    continue
                if rl > len(buf):
                    raise MQTTError(-1, "packet too long")
                await self._readn(rl)
                body = self._rmv[:rl]
                if b0 == _PUBACK:
                    self._rx_puback(_pid(body))
                elif b0 == _SUBACK:
                    pid, codes = _suback(body)
                    if pid == self._sub_pid:
                        self._sub_rc = codes[0]
                        self._sub_ev.set()
                elif b0 == _PINGRESP and rl == 0 or b0 == _UNSUBACK:
                    pass
                else:
                    raise MQTTError(-1, "unexpected packet 0x%02x" % b0)
        except Exception as e:  # anything malformed or a dead socket: the app reconnects
            self._down("reader: %r" % (e,))

    async def _rx_publish(self, b0, rl):
        n = len(self._rbuf)
        first = rl if rl <= n else n
        await self._readn(first)
        topic, msg, qos, retain, _, pid = decode_publish_body(b0 & 0x0F, self._rmv[:first])
        if qos > 1:
            raise MQTTError(-1, "QoS 2 not supported")
        if rl > n:
            # Larger than the receive buffer: skip the rest to stay in sync, still ack it
            # (a redelivery would be just as large).
            self._log("W", "dropped %d-byte message on %s" % (rl, bytes(topic)))
            rl -= first
            while rl:
                k = rl if rl < n else n
                await self._readn(k)
                rl -= k
        else:
            cb = self.on_message
            if cb is not None:
                try:
                    cb(bytes(topic), bytes(msg), retain)
                except Exception as e:  # an app bug must not take the connection down
                    self._log("E", "on_message: %r" % (e,))
        if qos:
            async with self._wlock:
                self._check_up()
                a = self._abuf
                a[2] = pid >> 8
                a[3] = pid & 0xFF
                await self._write(a)

    def _rx_puback(self, pid):
        for i in range(self._max):
            if self._ipid[i] == pid:
                self._ipid[i] = 0
                self._itopic[i] = self._imsg[i] = None
                self._n -= 1
                self._free_ev.set()
                cb = self.on_puback
                if cb is not None:
                    try:
                        cb(pid)
                    except Exception as e:
                        self._log("E", "on_puback: %r" % (e,))
                return
        self._log("D", "PUBACK for unknown pid %d" % pid)  # e.g. the ack of a resent duplicate

    async def _housekeeping(self):
        ka = self._ka * 1000
        try:
            while self._up:
                await asyncio.sleep_ms(self._tick)
                now = time.ticks_ms()
                if ka:
                    idle_rx = time.ticks_diff(now, self._last_rx)
                    if idle_rx >= ka:
                        self._down("no packet from broker for %d ms" % idle_rx)
                        return
                    # Ping when either direction idles for half the keepalive: the broker wants
                    # traffic at least once per keepalive, we want proof it is still there.
                    if not self._ping_out and (idle_rx >= ka >> 1 or
                                               time.ticks_diff(now, self._last_tx) >= ka >> 1):
                        self._ping_out = True
                        await self._send(_PING_PKT)
                for i in range(self._max):
                    pid = self._ipid[i]
                    if pid and time.ticks_diff(now, self._isent[i]) >= self._ack_ms:
                        if self._itries[i] >= self._retries:
                            self._down("no PUBACK for pid %d after %d resends" % (pid, self._retries))
                            return
                        self._itries[i] += 1
                        self._isent[i] = now
                        self._log("W", "no PUBACK for pid %d, resending" % pid)
                        await self._send_publish(self._itopic[i], self._imsg[i], 1, self._iret[i],
                                                 pid, True)
        except Exception as e:
            self._down("housekeeping: %r" % (e,))
