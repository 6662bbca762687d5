# The reading buffer: nothing leaves it before the broker's PUBACK.
#
# Fresh readings are staged in RTC memory (survives resets, watchdog and deep sleep, costs no flash
# wear): while the broker is connected their PUBACK comes within milliseconds and they never touch
# flash. The app calls flush() when the link is down (and the stage also flushes when `batch`
# readings pile up unacknowledged), appending them to segment files of SEG records each: an append
# programs erased flash without an erase, and a whole segment is deleted once every record in it is
# acknowledged. The flash part is a bounded ring: past `max` readings the oldest segment goes and
# the loss is counted.
#
# Records are fixed-size binary structs, never strings in RAM:
#   boot u32 | seq u32 | ts s u32 (0: no clock yet) | ts ms u16 | up u32 ms | t i16 0.1 °C |
#   rh u16 0.1 % | err u8 | sensor u8
# Times are integers because the ESP32's single-precision floats cannot hold a Unix time.
import os
import struct

from micropython import const

from . import log, unload

REC = const(24)
_FMT = "<IIIHIhHBB"
SEG = const(64)  # records per segment file: 1536 bytes, under half a 4 KiB flash sector
CUR = "<IIII"    # cursor file: magic, head, tail, dropped
MAGIC = const(0x48474231)  # "HGB1"
_CUR_EVERY = const(16)  # persist the read cursor every N flash acks (a lost cursor only replays)
# RTC block: magic, boot, next seq, flags, staged count; then the staged records
RTC_HDR = "<IIIHH"
RTC_HDR_LEN = const(16)
RTC_MAGIC = const(0x48475231)  # "HGR1"
FLAG_NTP = const(1)


def unpack(buf):
    """(boot, seq, ts_s, ts_ms, up, t, rh, err, sensor) of one record."""
    return struct.unpack_from(_FMT, buf, 0)


class Buffer:
    def __init__(self, max_records=2000, batch=8, path="buf", rtc=None):
        self.path = path
        self.batch = batch
        self.max = max_records
        self.rtc = rtc
        self.blk = bytearray(RTC_HDR_LEN + batch * REC)  # mirrors RTC memory
        self.stage = memoryview(self.blk)[RTC_HDR_LEN:]
        self.nstage = 0
        self.boot = 0
        self.seq = 0
        self.flags = 0
        self.head = 0  # index of the oldest unacknowledged record on flash
        self.tail = 0  # one past the newest record on flash
        self.dropped = 0
        self.writes = 0  # flash appends, for the benchmark and `meta`
        self._acks = 0
        self._rf = None  # open segment for replay reads
        self._rseg = -1
        try:
            os.mkdir(path)
        except OSError:
            pass
        # Boot-only code lives in its own module, dropped from RAM once the buffer is open.
        from .bufboot import load_cursor

        load_cursor(self)
        load_cursor = None
        unload("bufboot")

    # --- RTC memory ------------------------------------------------------------------------
    def restore_rtc(self):
        """After a reset that kept RTC memory: True when boot/seq/staged readings were recovered."""
        from .bufboot import restore_rtc

        try:
            return restore_rtc(self)
        finally:
            restore_rtc = None
            unload("bufboot")

    def save_rtc(self):
        if self.rtc is not None:
            struct.pack_into(RTC_HDR, self.blk, 0, RTC_MAGIC, self.boot, self.seq, self.flags,
                             self.nstage)
            self.rtc.memory(self.blk[: RTC_HDR_LEN + self.nstage * REC])

    # --- flash -----------------------------------------------------------------------------
    def _seg(self, i):
        return "%s/%d" % (self.path, i // SEG)

    def _save_cursor(self):
        with open(self.path + "/cur.new", "wb") as f:
            f.write(struct.pack(CUR, MAGIC, self.head, self.tail, self.dropped))
        os.rename(self.path + "/cur.new", self.path + "/cur")
        self._acks = 0

    def _append(self, mv, n):
        # Appends n packed records; splits at segment boundaries.
        i = 0
        while i < n:
            room = SEG - self.tail % SEG
            k = min(room, n - i)
            with open(self._seg(self.tail), "ab") as f:
                f.write(mv[i * REC:(i + k) * REC])
            self.tail += k
            i += k
        self.writes += 1
        # Bounded ring: the oldest whole segment goes once `max` readings would remain without it,
        # and the loss is counted.
        while self.tail - self.head >= self.max + SEG:
            first = self.head // SEG
            nxt = (first + 1) * SEG
            lost = min(nxt, self.tail) - self.head
            self.dropped += lost
            self._drop_seg(first)
            self.head = nxt
            log.warn("buffer", "full (%d readings): dropped the %d oldest, %d lost so far"
                     % (self.tail - self.head + lost, lost, self.dropped))
        self._save_cursor()

    def _drop_seg(self, seg):
        if self._rseg == seg:
            self._rf.close()
            self._rf = None
            self._rseg = -1
        try:
            os.remove("%s/%d" % (self.path, seg))
        except OSError:
            pass

    def pending_flash(self):
        return self.tail - self.head

    def pending(self):
        return self.tail - self.head + self.nstage

    # --- the interface the app uses --------------------------------------------------------
    def add(self, ts_s, ts_ms, up, t, rh, err, sensor):
        """Stages one reading under the next (boot, seq); returns its seq."""
        if self.nstage == self.batch:
            self.flush()
        struct.pack_into(_FMT, self.stage, self.nstage * REC, self.boot, self.seq, ts_s, ts_ms,
                         up & 0xFFFFFFFF, t, rh, err, sensor)
        self.nstage += 1
        self.seq += 1
        self.save_rtc()
        return self.seq - 1

    def flush(self):
        """Moves every staged reading to flash (before deep sleep with a full stage, or a batch)."""
        if self.nstage:
            self._append(self.stage, self.nstage)
            self.nstage = 0
            self.save_rtc()

    def peek(self, k, out):
        """Copies the k-th oldest unacknowledged record into `out` (a REC-byte buffer)."""
        nf = self.tail - self.head
        if k < nf:
            i = self.head + k
            seg = i // SEG
            if seg != self._rseg:
                if self._rf:
                    self._rf.close()
                self._rf = open(self._seg(i), "rb")
                self._rseg = seg
            self._rf.seek((i % SEG) * REC)
            if self._rf.readinto(out) != REC:
                raise OSError("buffer segment %d is short" % seg)
        else:
            k -= nf
            out[:] = self.stage[k * REC:(k + 1) * REC]

    def ack(self, n=1):
        """The n oldest records were acknowledged by the broker."""
        staged = False
        for _ in range(n):
            if self.tail > self.head:
                self.head += 1
                self._acks += 1
                if self.head % SEG == 0:
                    self._drop_seg(self.head // SEG - 1)
                    self._save_cursor()
                elif self.head == self.tail or self._acks >= _CUR_EVERY:
                    self._save_cursor()
                if self.head == self.tail and self.tail % SEG:
                    # Everything acknowledged: start the next append in a fresh segment file.
                    self._drop_seg(self.head // SEG)
                    self.head = self.tail = (self.tail // SEG + 1) * SEG
                    self._save_cursor()
            elif self.nstage:
                self.nstage -= 1
                self.stage[: self.nstage * REC] = self.stage[REC:(self.nstage + 1) * REC]
                staged = True
        if staged:  # acks of flash records leave RTC memory as it is
            self.save_rtc()

    def sync(self):
        """Persists the read cursor (before a reboot or deep sleep)."""
        self._save_cursor()
        self.save_rtc()
