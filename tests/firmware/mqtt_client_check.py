# MQTTClient against a scripted fake broker running in the same MicroPython event loop: the
# behaviour a real broker rarely shows (withheld PUBACKs, silence, garbage, refusals).
#
#     micropython tests/firmware/mqtt_client_check.py [name-substring]
#
# Not named *_test.py: the whole client compiled from source plus this script need more than the
# 64 KiB heap tests/firmware/test_under_micropython.py gives every *_test.py (boards run mpy-cross
# output). tests/host/test_firmware_mqtt.py runs it with the default heap.
import asyncio
import random
import time

import _mpytest
from _mpytest import eq, raises

mqtt = _mpytest.firmware_module("humigraph.mqtt")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def read_packet(r):
    # -> (first byte, body) of one packet from a stream
    h = await r.readexactly(2)
    rl = h[1] & 0x7F
    b = h[1]
    shift = 7
    while b & 0x80:
        b = (await r.readexactly(1))[0]
        rl |= (b & 0x7F) << shift
        shift += 7
    return h[0], (await r.readexactly(rl)) if rl else b""


class Broker:
    # One scripted connection at a time: script(broker, reader, writer) plays the broker side.
    def __init__(self, script):
        self.script = script
        self.packets = []  # (first byte, body) of everything the client sent
        self.errors = []
        self.conns = 0

    async def start(self):
        for _ in range(50):
            self.port = 20000 + random.getrandbits(15)
            try:
                self.srv = await asyncio.start_server(self._conn, "127.0.0.1", self.port)
                return self
            except OSError:
                pass
        raise OSError("no free port")

    async def stop(self):
        self.srv.close()
        await self.srv.wait_closed()
        if self.errors:
            raise self.errors[0]

    async def _conn(self, r, w):
        self.conns += 1
        try:
            await self.script(self, r, w)
        except Exception as e:
            if not isinstance(e, (EOFError, OSError)):
                self.errors.append(e)
        w.s.close()

    async def read(self, r):
        p = await read_packet(r)
        self.packets.append(p)
        return p

    async def accept(self, r, w, rc=0):
        b0, _ = await self.read(r)
        eq(b0, 0x10, "first packet must be CONNECT")
        w.write(bytes((0x20, 2, 0, rc)))
        await w.drain()

    async def drain_forever(self, r):
        while True:
            await self.read(r)


def client(port, **kw):
    logs = []
    kw.setdefault("ack_timeout_ms", 200)
    c = mqtt.MQTTClient(
        "t1", "127.0.0.1", port, log=lambda lvl, tag, msg: logs.append((lvl, tag, msg)), **kw
    )
    c.logs = logs
    return c


async def within(ms, aw, what):
    try:
        return await asyncio.wait_for_ms(aw, ms)
    except asyncio.TimeoutError:
        raise AssertionError("timed out: " + what) from None


async def test_connect_refused_code():
    async def script(b, r, w):
        await b.accept(r, w, rc=5)
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port)
    try:
        await c.connect(2000)
        raise AssertionError("connect succeeded")
    except mqtt.MQTTError as e:
        eq(e.code, 5)
    check(not c.isconnected(), "down after refusal")
    await c.wait_down()  # returns at once when never up
    await b.stop()


async def test_connect_timeout_and_no_listener():
    async def script(b, r, w):
        await b.drain_forever(r)  # never answers CONNECT

    b = await Broker(script).start()
    c = client(b.port)
    t0 = time.ticks_ms()
    try:
        await c.connect(300)
        raise AssertionError("connect succeeded")
    except OSError:
        pass
    check(time.ticks_diff(time.ticks_ms(), t0) < 1000, "connect timeout honoured")
    await b.stop()
    c2 = client(b.port)
    try:
        await c2.connect(1000)
        raise AssertionError("connect to a closed port succeeded")
    except OSError:
        pass


async def test_connect_packet_has_will_and_login():
    async def script(b, r, w):
        await b.accept(r, w)
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, user="u", password="pw", keepalive=7, will=("a/status", "offline", True, 1))
    await c.connect()
    await c.disconnect()
    await asyncio.sleep_ms(50)
    want = mqtt.connect_packet("t1", 7, True, "u", "pw", "a/status", "offline", 1, True)
    eq(bytes((b.packets[0][0], len(b.packets[0][1]))) + b.packets[0][1], want)
    eq(b.packets[-1], (0xE0, b""), "clean DISCONNECT")
    await b.stop()


async def test_qos1_resend_with_dup_then_puback():
    async def script(b, r, w):
        await b.accept(r, w)
        await b.read(r)  # original PUBLISH: withheld ack
        b0, body = await b.read(r)  # the resend
        w.write(mqtt.puback_packet(body[5] << 8 | body[6]))
        await w.drain()
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, ack_timeout_ms=150, retries=2)
    acked = []
    c.on_puback = acked.append
    await c.connect()
    pid = await c.publish("a/b", "hi", qos=1)
    eq(c.inflight(), 1)
    await within(2000, _until(lambda: acked), "PUBACK after resend")
    eq(acked, [pid])
    eq(c.inflight(), 0)
    (f1, body1), (f2, body2) = b.packets[1], b.packets[2]
    eq((f1, f2), (0x32, 0x3A), "second copy carries DUP")
    eq(body1, body2, "same pid and payload")
    check(any("resending" in m for _, _, m in c.logs), "resend logged")
    check(c.isconnected(), "still up")
    await c.disconnect()
    await b.stop()


async def _until(cond, step=10):
    while not cond():
        await asyncio.sleep_ms(step)


async def test_qos1_retries_exhausted_drops_connection():
    async def script(b, r, w):
        await b.accept(r, w)
        await b.drain_forever(r)  # never acks

    b = await Broker(script).start()
    c = client(b.port, ack_timeout_ms=100, retries=2)
    await c.connect()
    t0 = time.ticks_ms()
    await c.publish("a/b", "x", qos=1)
    await within(2000, c.wait_down(), "down after retries")
    dt = time.ticks_diff(time.ticks_ms(), t0)
    check(250 <= dt <= 1000, f"gave up after 3 x ack timeout, took {dt} ms")
    await asyncio.sleep_ms(20)
    eq([p[0] for p in b.packets[1:]], [0x32, 0x3A, 0x3A], "original + 2 resends")
    eq(c.inflight(), 0)
    try:
        await c.publish("a/b", "x", qos=1)
        raise AssertionError("publish while down")
    except OSError:
        pass
    await b.stop()


async def test_window_blocks_at_max_inflight():
    release = asyncio.Event()

    async def script(b, r, w):
        await b.accept(r, w)
        pids = []
        while len(pids) < 2:
            _, body = await b.read(r)
            pids.append(body[5] << 8 | body[6])
        await release.wait()
        w.write(mqtt.puback_packet(pids[0]))
        await w.drain()
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, max_inflight=2, ack_timeout_ms=5000)
    await c.connect()
    p1 = await c.publish("a/b", "1", qos=1)
    p2 = await c.publish("a/b", "2", qos=1)
    eq((p1, p2, c.inflight()), (1, 2, 2))
    t = asyncio.create_task(c.publish("a/b", "3", qos=1))
    await asyncio.sleep_ms(100)
    check(not t.done(), "third publish waits for a free slot")
    release.set()
    p3 = await within(1000, t, "third publish after PUBACK")
    eq((p3, c.inflight()), (3, 2))
    await c.disconnect()
    await b.stop()


async def test_waiting_publisher_gets_oserror_on_close():
    async def script(b, r, w):
        await b.accept(r, w)
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, max_inflight=1, ack_timeout_ms=5000)
    await c.connect()
    await c.publish("a", "1", qos=1)
    t = asyncio.create_task(c.publish("a", "2", qos=1))
    await asyncio.sleep_ms(50)
    c.close()
    try:
        await within(500, t, "waiter woken")
        raise AssertionError("publish succeeded after close")
    except OSError:
        pass
    await b.stop()


async def test_stalled_write_is_unblocked_by_close():
    import socket

    async def script(b, r, w):
        await b.accept(r, w)
        await asyncio.sleep(5)  # never reads: the client's socket buffer fills up

    b = await Broker(script).start()
    c = client(b.port)
    await c.connect()
    c._s.s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUF", 7), 4096)  # 7: Linux
    big = b"x" * 16384
    state = []

    async def flood():
        try:
            while True:
                await c.publish("a", big)
                state.append(1)
        except OSError:
            state.append("oserror")

    t = asyncio.create_task(flood())
    await within(3000, _until(lambda: len(state) > 2 and c._wtask is not None), "write stalls")
    c.close()
    await within(500, _until(lambda: state[-1] == "oserror"), "stalled writer gets OSError")
    check(t.done(), "flood task finished")
    await b.stop()


async def test_incoming_publish_qos1_acked_and_delivered():
    async def script(b, r, w):
        await b.accept(r, w)
        w.write(mqtt.publish_packet("x/cmd", b'{"cmd":"ping"}', 1, True, 77))
        w.write(mqtt.publish_packet("x/q0", b"", 0, False))
        w.write(mqtt.publish_packet("x/big", b"z" * 300, 1, False, 78))  # larger than rx_buf
        w.write(mqtt.publish_packet("x/after", b"ok", 1, False, 79))
        await w.drain()
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, rx_buf=128)
    got = []
    c.on_message = lambda t, m, ret: got.append((t, m, ret))
    await c.connect()
    await within(1000, _until(lambda: len(got) == 3 and len(b.packets) == 4), "messages + acks")
    eq(
        got,
        [(b"x/cmd", b'{"cmd":"ping"}', True), (b"x/q0", b"", False), (b"x/after", b"ok", False)],
    )
    eq(
        [bytes((f, 2)) + body for f, body in b.packets[1:]],
        [mqtt.puback_packet(77), mqtt.puback_packet(78), mqtt.puback_packet(79)],
    )
    check(any("dropped" in m for _, _, m in c.logs), "oversize drop logged")
    check(c.isconnected(), "still up")
    await c.disconnect()
    await b.stop()


async def test_callback_exception_does_not_kill_connection():
    async def script(b, r, w):
        await b.accept(r, w)
        w.write(mqtt.publish_packet("x", b"1", 1, False, 5))
        await w.drain()
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port)
    c.on_message = lambda t, m, r: 1 / 0
    await c.connect()
    await within(1000, _until(lambda: len(b.packets) == 2), "PUBACK despite callback error")
    check(c.isconnected(), "still up")
    check(any(lvl == "E" for lvl, _, _ in c.logs), "callback error logged")
    await c.disconnect()
    await b.stop()


async def _malformed(garbage):
    async def script(b, r, w):
        await b.accept(r, w)
        await asyncio.sleep_ms(20)
        w.write(garbage)
        await w.drain()
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port)
    await c.connect()
    await within(1000, c.wait_down(), f"down after {garbage!r}")
    check(not c.isconnected(), "marked down")
    check(any(lvl == "W" for lvl, _, _ in c.logs), "loss logged")
    await b.stop()


async def test_malformed_from_broker_drops_connection():
    for garbage in (
        b"\xff\xff\xff\xff\xff\x01",  # bad remaining length
        b"\x20\x02\x00\x00",  # a second CONNACK
        b"\x40\x03\x00\x01\x00",  # PUBACK of wrong length
        b"\x36\x05\x00\x01t\x00\x01",  # PUBLISH QoS 3
        b"\x30\x05\x00\x09abc",  # topic length beyond the packet
        b"\x90\x02\x00\x01",  # SUBACK without a return code
        b"\xd0\x01\x00",  # PINGRESP with a body
        b"\x50\x02\x00\x01",
    ):  # PUBREC: QoS 2 flow, never requested
        await _malformed(garbage)


async def test_keepalive_pings_and_detects_silent_broker():
    async def script(b, r, w):
        await b.accept(r, w)
        while True:
            b0, _ = await b.read(r)
            if b0 == 0xC0 and b.conns == 1 and len(b.packets) == 2:  # answer the first ping only
                w.write(b"\xd0\x00")
                await w.drain()

    b = await Broker(script).start()
    c = client(b.port, keepalive=1)
    await c.connect()
    t0 = time.ticks_ms()
    await within(4000, c.wait_down(), "keepalive timeout")
    dt = time.ticks_diff(time.ticks_ms(), t0)
    pings = [p for p in b.packets if p[0] == 0xC0]
    check(len(pings) >= 2, f"pinged twice, got {len(pings)}")
    check(1400 <= dt <= 2600, f"down after ~1.5-2 keepalive periods, took {dt} ms")
    await b.stop()


async def test_subscribe_suback_refused_and_timeout():
    async def script(b, r, w):
        await b.accept(r, w)
        _, body = await b.read(r)
        w.write(bytes((0x90, 3, body[0], body[1], 1)))  # granted QoS 1
        await w.drain()
        _, body = await b.read(r)
        w.write(bytes((0x90, 3, body[0], body[1], 0x80)))  # refused
        await w.drain()
        await b.drain_forever(r)  # third: no SUBACK at all

    b = await Broker(script).start()
    c = client(b.port)
    await c.connect()
    await c.subscribe("ok/#", 1)
    try:
        await c.subscribe("nope/#", 1)
        raise AssertionError("refused subscription accepted")
    except mqtt.MQTTError as e:
        eq(e.code, 0x80)
    try:
        await c.subscribe("slow", 1, timeout_ms=200)
        raise AssertionError("no SUBACK but subscribe returned")
    except OSError:
        pass
    eq(b.packets[1], (0x82, b"\x00\x01\x00\x04ok/#\x01"))
    await c.disconnect()
    await b.stop()


async def test_pid_wraps_and_skips_inflight():
    async def script(b, r, w):
        await b.accept(r, w)
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port, ack_timeout_ms=5000)
    await c.connect()
    eq(await c.publish("a", "1", qos=1), 1)
    c._pid = 65534
    eq(await c.publish("a", "2", qos=1), 65535)
    eq(await c.publish("a", "3", qos=1), 2, "wraps to 1, which is still in flight")
    eq(await c.publish("a", "4"), 0, "QoS0 has no pid")
    eq(c.inflight(), 3)
    await c.disconnect()
    eq(c.inflight(), 0)
    await b.stop()


async def test_reconnect_same_client():
    async def script(b, r, w):
        await b.accept(r, w)
        if b.conns == 1:
            return  # drop the first connection right away
        await b.drain_forever(r)

    b = await Broker(script).start()
    c = client(b.port)
    await c.connect()
    await within(1000, c.wait_down(), "first connection lost")
    await c.connect()
    check(c.isconnected(), "reconnected")
    eq(await c.publish("a", "1", qos=1), 1)
    await c.disconnect()
    await b.stop()


def test_publish_rejects_qos2_when_down():
    c = mqtt.MQTTClient("x", "127.0.0.1", 1)
    raises(ValueError, asyncio.run, c.publish("a", "b", qos=2))
    raises(OSError, asyncio.run, c.publish("a", "b", qos=1))
    check(not c.isconnected() and c.inflight() == 0, "fresh client is down")
    c.close()  # harmless when never connected


if __name__ == "__main__":
    _mpytest.main(globals())
