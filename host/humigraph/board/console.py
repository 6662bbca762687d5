"""``humigraph console``: a serial console built for debugging humigraph boards.

* Opening the port does not reset the board (RTS and DTR stay deasserted) unless ``reset``.
* Every line gets the host's wall-clock time; log lines (``[uptime] L tag: message``) are coloured
  by level (D dim, W yellow, E red), can be filtered by ``level`` and ``grep``; fix-it hints
  (sensor wiring, Wi-Fi password, broker login, config errors, safe mode) are marked ``>>`` and
  MicroPython tracebacks are shown in red whatever the level filter.
* Runs of identical lines (ignoring the board's uptime) are shown once, then summarised.
* ``log``: every line the board sends (unfiltered, no colours, with the host time) is appended.
* Keys: Ctrl-] quits; Ctrl-T then R resets the board (EN pulse via RTS, or ``machine.reset()``
  through the REPL where the port has no RTS line, e.g. a virtual board's pty); Ctrl-T H lists the
  keys; Ctrl-T Ctrl-T sends a Ctrl-T; everything else, Ctrl-C included, goes to the board.
* Unplug and replug: the console says the port is gone, waits for it and carries on.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import ConsoleError, FlashError, UsageError

__all__ = ["Console", "LineView", "classify"]

QUIT = b"\x1d"  # Ctrl-]
MENU = b"\x14"  # Ctrl-T
HELP = (
    "keys: Ctrl-] quit | Ctrl-T R reset the board | Ctrl-T H this help | Ctrl-T Ctrl-T send Ctrl-T "
    "| Ctrl-C stops the app (REPL: status(), read(), setkey(k, v), start())"
)

_LOG_RE = re.compile(r"^\[\s*\d+\.\d{3}\] ([DIWE]) ")
_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}
_LEVEL_OF = {"D": 0, "I": 1, "W": 2, "E": 3}
# The firmware's fix-it hints (firmware/humigraph/hints.py, wifi.py, mqtt.py, config.py, app.py).
_HINT_RE = re.compile(
    r"no response from the sensor|corrupted bits|impossible value|could not be set up"
    r"|wrong password|refused the connection|unreachable|not found; retrying"
    r"| E config: |safe mode|failed boots in a row|buffer: full"
)
_COLORS = {
    "debug": "2",
    "info": "",
    "warning": "33",
    "error": "31",
    "traceback": "1;31",
    "hint": "1;35",
    "marker": "36",
    "other": "",
}


def classify(line: str, in_traceback: bool = False) -> tuple[str, bool]:
    """(kind, still in a traceback) for one console line. Kinds: debug, info, warning, error
    (log lines), hint, traceback, other (REPL output, banners)."""
    if line.startswith("Traceback (most recent call last)"):
        return "traceback", True
    if in_traceback:
        if line.startswith((" ", "\t")):
            return "traceback", True
        # the exception line ends it ("OSError: [Errno 110] ETIMEDOUT")
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line):
            return "traceback", False
        in_traceback = False
    m = _LOG_RE.match(line)
    if m is None:
        return "other", in_traceback
    if _HINT_RE.search(line):
        return "hint", False
    return ("debug", "info", "warning", "error")[_LEVEL_OF[m.group(1)]], False


def _strip_uptime(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d{3}\] ", "", line)


class LineView:
    """Complete lines from the board -> what the console shows (pure; tests feed it lines)."""

    def __init__(
        self,
        level: str = "debug",
        grep: str | None = None,
        color: bool = False,
        clock: Callable[[], float] = time.time,
        repeat_every: int = 20,
    ) -> None:
        self.repeat_every = repeat_every
        if level not in _LEVELS:
            raise UsageError(f"level: expected one of {', '.join(_LEVELS)}, got {level!r}")
        self.min_level = _LEVELS[level]
        try:
            self.grep = re.compile(grep) if grep else None
        except re.error as e:
            raise UsageError(f"grep: {grep!r} is not a valid regular expression: {e}") from None
        self.color = color
        self.clock = clock
        self._in_tb = False
        self._last_key: str | None = None
        self._repeats = 0

    def stamp(self) -> str:
        t = self.clock()
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"

    def paint(self, kind: str, text: str) -> str:
        code = _COLORS.get(kind, "")
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text

    def plain(self, line: str) -> str:
        """The line as written to the log file."""
        return f"{self.stamp()} {line}"

    def marker(self, text: str) -> str:
        return self.paint("marker", f"{self.stamp()} --- {text} ---")

    def feed(self, line: str) -> list[str]:
        kind, self._in_tb = classify(line, self._in_tb)
        if kind in ("debug", "info", "warning", "error") and _LEVEL_OF[kind[0].upper()] < (
            self.min_level
        ):
            return []
        if self.grep is not None and not self.grep.search(line):
            return []
        out: list[str] = []
        key = _strip_uptime(line)
        if key == self._last_key and kind != "traceback":
            self._repeats += 1
            # a board that repeats itself for ever still shows it is alive
            return self.flush() if self._repeats >= self.repeat_every else []
        out += self.flush()
        self._last_key = key
        text = f">> {line}" if kind == "hint" else line
        out.append(f"{self.stamp()} {self.paint(kind, text)}")
        return out

    def flush(self) -> list[str]:
        """The summary of a run of repeated lines, if one is pending."""
        if not self._repeats:
            return []
        n, self._repeats = self._repeats, 0
        times = "time" if n == 1 else "times"
        return [self.paint("marker", f"{self.stamp()} (the line above repeated {n} more {times})")]


class Console:
    """A serial console on ``port``; :meth:`run` blocks until Ctrl-] or :meth:`stop`."""

    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        reset: bool = False,
        level: str = "debug",
        grep: str | None = None,
        log: Path | None = None,
        color: bool | None = None,
        out: IO[str] | None = None,
        partial_delay: float = 0.05,
    ) -> None:
        self.port = port
        self.baud = baud
        self.reset_on_open = reset
        self.out: IO[str] = out if out is not None else sys.stdout
        if color is None:
            color = bool(getattr(self.out, "isatty", lambda: False)()) and not os.environ.get(
                "NO_COLOR"
            )
        self.view = LineView(level, grep, color)
        self.log_path = log
        self.partial_delay = partial_delay
        self._log: IO[str] | None = None
        self._ser: Any = None
        self._stop = threading.Event()
        self._nl = "\n"
        self._buf = b""
        self._shown = 0  # bytes of the pending partial line already printed (prompts, echo)
        self._last_rx = 0.0
        self._menu = False
        self.reconnects = 0

    # ---- public

    def stop(self) -> None:
        self._stop.set()

    def run(self, stdin: int | None = None) -> int:
        """Reads the board and (when ``stdin`` is a file descriptor, default the terminal's)
        sends keys to it. Returns 0 on Ctrl-] or :meth:`stop`."""
        if stdin is None and sys.stdin is not None and sys.stdin.isatty():
            stdin = sys.stdin.fileno()
        if self.log_path is not None:
            try:
                self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise ConsoleError(f"cannot write the log {self.log_path}: {e.strerror}") from None
        saved = None
        try:
            self._open(first=True)
            if stdin is not None and os.isatty(stdin):
                import termios
                import tty

                saved = termios.tcgetattr(stdin)
                tty.setraw(stdin)
                self._nl = "\r\n"
            self._emit([self.view.marker(f"console on {self.port} at {self.baud} baud; {HELP}")])
            if self.reset_on_open:
                self._reset_board()
            self._loop(stdin)
        finally:
            if saved is not None and stdin is not None:
                import termios

                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            self._emit(self.view.flush())
            self._close()
            if self._log is not None:
                self._log.close()
        return 0

    # ---- serial port

    def _open(self, first: bool = False) -> None:
        import serial

        s = serial.Serial()
        s.port = self.port
        s.baudrate = self.baud
        s.timeout = 0
        # no reset on open: an ESP32's auto-reset circuit pulls EN through RTS (and DTR)
        s.dtr = False
        s.rts = False
        try:
            s.open()
        except serial.SerialException as e:
            if not first:
                raise
            from .flash import check_port_access

            try:
                check_port_access(self.port)
            except FlashError as fe:
                raise ConsoleError(str(fe)) from None
            raise ConsoleError(f"cannot open {self.port}: {e}") from None
        self._ser = s

    def _close(self) -> None:
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
            self._ser = None

    def _reset_board(self) -> None:
        s = self._ser
        if s is None:
            return
        try:
            s.dtr = False
            s.rts = True  # EN low
            time.sleep(0.1)
            s.rts = False
            how = "EN pulsed through RTS"
        except (OSError, ValueError, Exception):
            # a port without modem lines (a pty): ask MicroPython itself
            s.write(b"\r\x03\x03import machine; machine.reset()\r")
            how = "machine.reset() sent to the REPL"
        self._emit([self.view.marker(f"reset ({how})")])

    # ---- the loop

    def _loop(self, stdin: int | None) -> None:
        while not self._stop.is_set():
            if self._ser is None:
                self._wait_for_port(stdin)
                continue
            fds = [self._ser.fileno()] + ([stdin] if stdin is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                self._lost()
                continue
            if stdin is not None and stdin in ready and not self._keys(stdin):
                return
            if self._ser is not None and self._ser.fileno() in ready:
                try:
                    data = self._ser.read(self._ser.in_waiting or 1)
                except Exception:  # serial.SerialException, OSError: unplugged
                    self._lost()
                    continue
                if data:
                    self._rx(data)
            self._partial()

    def _lost(self) -> None:
        self._close()
        self._end_partial()
        self._emit(self.view.flush())
        self._emit(
            [self.view.marker(f"{self.port} is gone; waiting for it to come back (Ctrl-] quits)")]
        )

    def _wait_for_port(self, stdin: int | None) -> None:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            if stdin is not None:
                ready, _, _ = select.select([stdin], [], [], 0.05)
                if ready and not self._keys(stdin):
                    self._stop.set()
                    return
            else:
                time.sleep(0.05)
        if not os.path.exists(self.port):
            return
        try:
            self._open()
        except Exception:
            return
        self.reconnects += 1
        self._emit([self.view.marker(f"{self.port} is back; carrying on")])

    def _keys(self, stdin: int) -> bool:
        """Handles typed bytes; False to quit."""
        try:
            data = os.read(stdin, 1024)
        except OSError:
            return True
        if not data:
            return True
        send = bytearray()
        for b in data:
            c = bytes([b])
            if self._menu:
                self._menu = False
                if c in (b"r", b"R", b"\x12"):
                    self._send(bytes(send))
                    send.clear()
                    self._reset_board()
                elif c in (b"h", b"H", b"?"):
                    self._emit([self.view.marker(HELP)])
                elif c in (b"q", b"Q", b"x", b"X"):
                    self._send(bytes(send))
                    return False
                elif c == MENU:
                    send += MENU
                continue
            if c == QUIT:
                self._send(bytes(send))
                return False
            if c == MENU:
                self._menu = True
                continue
            send += c
        self._send(bytes(send))
        return True

    def _send(self, data: bytes) -> None:
        if data and self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.write(data)

    def _rx(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").replace("\r", "")
            if self._log is not None:
                self._log.write(self.view.plain(line) + "\n")
                self._log.flush()
            if self._shown:
                # the start was printed as a partial line (a prompt and the echo of typed text)
                self._write(line[self._shown :] + self._nl)
                self._shown = 0
                continue
            if line.strip():
                self._emit(self.view.feed(line))

    def _partial(self) -> None:
        """Shows an incomplete line (``>>> `` and echoed keys) once the board pauses."""
        if not self._buf or time.monotonic() - self._last_rx < self.partial_delay:
            return
        text = self._buf.decode("utf-8", "replace").replace("\r", "")
        if len(text) > self._shown:
            if self._shown == 0:
                self._emit(self.view.flush())
            self._write(text[self._shown :])
            self._shown = len(text)

    def _end_partial(self) -> None:
        if self._shown:
            self._write(self._nl)
        self._shown = 0
        self._buf = b""

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self._write(line + self._nl)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
