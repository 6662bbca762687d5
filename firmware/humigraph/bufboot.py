# Boot-time half of the buffer (buffer.py): recovering RTC memory and the flash cursor. Loaded
# once at boot and dropped, so it costs no RAM while the board runs.
import os
import struct

from . import log
from .buffer import CUR, MAGIC, RTC_HDR, RTC_HDR_LEN, RTC_MAGIC, SEG, REC


def restore_rtc(self):
    """After a reset that kept RTC memory: True when boot/seq/staged readings were recovered."""
    if self.rtc is None:
        return False
    data = self.rtc.memory()
    if len(data) < RTC_HDR_LEN:
        return False
    magic, boot, seq, flags, n = struct.unpack_from(RTC_HDR, data, 0)
    if magic != RTC_MAGIC or len(data) < RTC_HDR_LEN + n * REC:
        return False
    self.boot, self.seq, self.flags = boot, seq, flags
    # A smaller batch after a config change: spill what does not fit straight to flash.
    keep = min(n, self.batch)
    if n > keep:
        self._append(memoryview(data)[RTC_HDR_LEN:RTC_HDR_LEN + (n - keep) * REC], n - keep)
    start = RTC_HDR_LEN + (n - keep) * REC
    self.stage[: keep * REC] = data[start:start + keep * REC]
    self.nstage = keep
    return True


def load_cursor(self):
    try:
        with open(self.path + "/cur", "rb") as f:
            magic, head, tail, dropped = struct.unpack(CUR, f.read(16))
        if magic != MAGIC or head > tail:
            raise ValueError
        self.head, self.tail, self.dropped = head, tail, dropped
    except (OSError, ValueError):
        self.head = self.tail = -1
    # The files are the truth for the tail (an append may have landed after the last cursor
    # write) and for the head when the cursor is missing.
    segs = []
    for name in os.listdir(self.path):
        if name.isdigit():
            segs.append(int(name))
    if not segs:
        self.head = self.tail = max(self.tail, 0)
        return
    segs.sort()
    last = segs[-1]
    size = os.stat("%s/%d" % (self.path, last))[6]
    if size % REC:  # a torn append: drop the partial record
        _truncate("%s/%d" % (self.path, last), size - size % REC)
        size -= size % REC
    self.tail = last * SEG + size // REC
    if self.head < segs[0] * SEG or self.head > self.tail:
        self.head = segs[0] * SEG
    n = self.pending_flash()
    if n:
        log.info("buffer", "%d readings on flash waiting for the broker" % n)


def _truncate(name, size):
    with open(name, "rb") as f:
        data = f.read(size)
    with open(name, "wb") as f:
        f.write(data)
