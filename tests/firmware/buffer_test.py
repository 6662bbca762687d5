# The reading buffer: staging in RTC memory, segments on flash, ack cursor, overflow accounting.
import os
import time

import _mpytest
from _mpytest import eq

from humigraph.buffer import REC, Buffer, unpack

_ROOT = "%s/buftest-%d" % (os.getenv("HUMIGRAPH_TEST_TMP") or "/tmp", time.ticks_ms())


class FakeRTC:
    def __init__(self):
        self.mem = b""

    def memory(self, data=None):
        if data is None:
            return self.mem
        if len(data) > 2048:
            raise ValueError("RTC memory holds 2048 bytes")
        self.mem = bytes(data)


_n = [0]


def fresh_dir():
    _n[0] += 1
    d = "%s-%d" % (_ROOT, _n[0])
    try:
        os.mkdir(_ROOT)
    except OSError:
        pass
    return d


def seqs(b):
    out = bytearray(REC)
    got = []
    for k in range(b.pending()):
        b.peek(k, out)
        got.append(unpack(out)[1])
    return got


def fill(b, n, ts=1764400000):
    for i in range(n):
        b.add(ts + i, 250, 1000 * i, 215, 452, 0, 1)


def test_record_roundtrip():
    b = Buffer(100, 4, path=fresh_dir(), rtc=FakeRTC())
    b.boot = 17
    b.seq = 1042
    b.add(1764400000, 125, 3600123, -53, 1000, 0, 1)
    out = bytearray(REC)
    b.peek(0, out)
    eq(unpack(out), (17, 1042, 1764400000, 125, 3600123, -53, 1000, 0, 1))


def test_staging_then_flash_in_order():
    b = Buffer(100, 4, path=fresh_dir(), rtc=FakeRTC())
    fill(b, 10)
    eq(b.pending(), 10)
    eq(b.pending_flash(), 8)  # two full batches went to flash, two wait in RTC memory
    eq(b.writes, 2)
    eq(seqs(b), list(range(10)))


def test_acked_while_staged_never_touches_flash():
    b = Buffer(100, 4, path=fresh_dir(), rtc=FakeRTC())
    for _ in range(50):
        fill(b, 1)
        b.ack(1)
    eq(b.pending(), 0)
    eq(b.writes, 0)


def test_ack_advances_oldest_first():
    b = Buffer(100, 4, path=fresh_dir(), rtc=FakeRTC())
    fill(b, 10)
    b.ack(3)
    eq(seqs(b), list(range(3, 10)))
    b.ack(7)
    eq(b.pending(), 0)


def test_survives_reset_via_rtc_and_flash():
    d = fresh_dir()
    rtc = FakeRTC()
    b = Buffer(100, 4, path=d, rtc=rtc)
    b.boot = 5
    fill(b, 10)
    b2 = Buffer(100, 4, path=d, rtc=rtc)
    eq(b2.restore_rtc(), True)
    eq((b2.boot, b2.seq), (5, 10))
    eq(seqs(b2), list(range(10)))


def test_power_cycle_keeps_flash_part():
    d = fresh_dir()
    b = Buffer(100, 4, path=d, rtc=FakeRTC())
    fill(b, 10)
    b2 = Buffer(100, 4, path=d, rtc=FakeRTC())  # RTC memory lost
    eq(b2.restore_rtc(), False)
    eq(seqs(b2), list(range(8)))


def test_cursor_persisted_on_sync():
    d = fresh_dir()
    rtc = FakeRTC()
    b = Buffer(100, 4, path=d, rtc=rtc)
    fill(b, 12)
    b.ack(5)
    b.sync()
    b2 = Buffer(100, 4, path=d, rtc=rtc)
    b2.restore_rtc()
    eq(seqs(b2), list(range(5, 12)))


def test_lost_cursor_replays_never_loses():
    d = fresh_dir()
    rtc = FakeRTC()
    b = Buffer(100, 4, path=d, rtc=rtc)
    fill(b, 12)
    b.ack(5)  # fewer acks than the cursor interval: not yet persisted
    os.remove(d + "/cur")
    b2 = Buffer(100, 4, path=d, rtc=rtc)
    b2.restore_rtc()
    eq(seqs(b2), list(range(12)))  # replayed from the oldest segment: duplicates, nothing lost


def test_torn_append_is_truncated():
    d = fresh_dir()
    b = Buffer(100, 4, path=d, rtc=FakeRTC())
    fill(b, 9)  # 8 on flash, 1 staged
    with open(d + "/0", "ab") as f:
        f.write(b"\x01\x02\x03")  # power cut in the middle of a record
    b2 = Buffer(100, 4, path=d, rtc=FakeRTC())
    eq(seqs(b2), list(range(8)))
    fill(b2, 5)
    eq(seqs(b2)[:9], list(range(8)) + [0])


def test_segments_deleted_when_acked():
    d = fresh_dir()
    b = Buffer(1000, 8, path=d, rtc=FakeRTC())
    fill(b, 200)
    eq(b.pending_flash(), 192)
    b.ack(200)
    names = [n for n in os.listdir(d) if n.isdigit()]
    eq(names, [])


def test_overflow_drops_oldest_and_counts():
    b = Buffer(100, 4, path=fresh_dir(), rtc=FakeRTC())
    fill(b, 400)
    eq(b.pending() >= 100, True)
    eq(b.pending() + b.dropped, 400)
    s = seqs(b)
    eq(s[-1], 399)
    eq(s, list(range(s[0], 400)))


def test_batch_shrink_spills_to_flash():
    d = fresh_dir()
    rtc = FakeRTC()
    b = Buffer(100, 8, path=d, rtc=rtc)
    fill(b, 6)
    b2 = Buffer(100, 2, path=d, rtc=rtc)
    eq(b2.restore_rtc(), True)
    eq(seqs(b2), list(range(6)))


if __name__ == "__main__":
    _mpytest.main(globals())
