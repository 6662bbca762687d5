"""The serial console: line view (pure) and the port loop on a fake pty pair (unplug/replug)."""

from __future__ import annotations

import io
import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from humigraph.board.console import Console, LineView, classify
from humigraph.errors import ConsoleError, UsageError

T0 = 1764400000.25  # fixed host clock for the view tests


def _view(**kw: object) -> LineView:
    return LineView(clock=lambda: T0, **kw)  # type: ignore[arg-type]


def _msg(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[1] for line in lines]


def test_lines_get_host_timestamps() -> None:
    out = _view().feed("[      0.012] I app: humigraph 0.1.0 on home/kitchen-1")
    assert len(out) == 1
    stamp, rest = out[0].split(" ", 1)
    assert stamp == time.strftime("%H:%M:%S", time.localtime(T0)) + ".250"
    assert rest == "[      0.012] I app: humigraph 0.1.0 on home/kitchen-1"


def test_level_filter_and_grep() -> None:
    v = _view(level="warning")
    assert v.feed("[      1.000] I wifi: connected") == []
    assert v.feed("[      1.000] D mqtt: ping") == []
    assert _msg(v.feed("[      2.000] W mqtt: connection lost; 3 readings buffered")) == [
        "[      2.000] W mqtt: connection lost; 3 readings buffered"
    ]
    # REPL output and tracebacks are not log lines: the level filter keeps them
    assert _msg(v.feed(">>> status()")) == [">>> status()"]
    g = _view(grep="mqtt")
    assert g.feed("[      1.000] I wifi: connected") == []
    assert len(g.feed("[      1.000] I mqtt: connected")) == 1


def test_colours_by_level_hints_and_tracebacks() -> None:
    v = _view(color=True)
    assert "\x1b[2m" in v.feed("[      0.001] D x: debug")[0]
    assert "\x1b[33m" in v.feed("[      0.002] W x: careful")[0]
    assert "\x1b[31m" in v.feed("[      0.003] E x: broken")[0]
    hint = v.feed(
        "[      4.000] W sensor: DHT22 on GPIO4: timeout; no response from the sensor: check the "
        "data wire is on GPIO4"
    )[0]
    assert "\x1b[1;35m>> [" in hint
    assert "\x1b[1;35m>>" in v.feed("[      5.000] E wifi: wrong password for 'lab': fix it")[0]
    assert (
        "\x1b[1;35m>>"
        in v.feed("[      6.000] E mqtt: broker x refused the connection (code 5): check")[0]
    )
    tb = [
        "Traceback (most recent call last):",
        '  File "main.py", line 3, in <module>',
        "OSError: [Errno 110] ETIMEDOUT",
    ]
    for line in tb:
        assert "\x1b[1;31m" in v.feed(line)[0]
    assert "\x1b[" not in v.feed("MicroPython v1.29 on esp32")[0]
    # without colour the hint is still marked
    assert _msg(_view().feed("[      0.004] E config: sensor.pin: GPIO 34 is input-only"))[
        0
    ].startswith(">> ")


def test_classify_traceback_ends_at_exception_line() -> None:
    kind, tb = classify("Traceback (most recent call last):")
    assert (kind, tb) == ("traceback", True)
    assert classify('  File "x.py", line 1', tb) == ("traceback", True)
    assert classify("KeyboardInterrupt: ", True) == ("traceback", False)
    assert classify("[      1.000] I app: ok", False) == ("info", False)


def test_repeated_lines_are_summarised() -> None:
    v = _view()
    first = v.feed("[      2.000] W sensor: DHT22 on GPIO4: checksum")
    assert len(first) == 1
    for up in (4, 6, 8):
        assert v.feed(f"[      {up}.000] W sensor: DHT22 on GPIO4: checksum") == []
    out = _msg(v.feed("[     10.000] I sensor: back"))
    assert out == ["(the line above repeated 3 more times)", "[     10.000] I sensor: back"]
    assert v.flush() == []
    # an endless run is summarised every `repeat_every` repeats
    v = _view(repeat_every=3)
    v.feed("[      1.000] W x: again")
    got = [v.feed(f"[      {i}.000] W x: again") for i in range(2, 9)]
    assert [len(g) for g in got] == [0, 0, 1, 0, 0, 1, 0]
    assert _msg(got[2]) == ["(the line above repeated 3 more times)"]


def test_bad_filters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="level"):
        LineView(level="loud")
    with pytest.raises(UsageError, match="grep"):
        LineView(grep="(")


# ---- the port loop on a fake pty pair


class FakePort:
    """A pty pair whose slave is reachable through a symlink, like a USB port under /dev."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        name = os.ttyname(slave)
        os.close(slave)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(name)

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)
        self.master = -1

    def board_says(self, text: str) -> None:
        os.write(self.master, text.replace("\n", "\r\n").encode())

    def read(self, timeout: float = 5.0) -> bytes:
        import select

        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                got += os.read(self.master, 1024)
            elif got:
                break
        return got


class Screen(io.StringIO):
    def wait_for(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.getvalue():
                return self.getvalue()
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not on the console; got {self.getvalue()!r}")


@pytest.fixture
def running(
    tmp_path: Path,
) -> Iterator[tuple[FakePort, Screen, int, Console, Path]]:
    port = FakePort(tmp_path / "ttyUSB0")
    screen = Screen()
    keys_r, keys_w = os.pipe()
    log = tmp_path / "console.log"
    console = Console(str(port.link), out=screen, color=False, log=log, level="info")
    t = threading.Thread(target=console.run, kwargs={"stdin": keys_r}, daemon=True)
    t.start()
    screen.wait_for("console on")
    try:
        yield port, screen, keys_w, console, log
    finally:
        console.stop()
        t.join(timeout=5)
        os.close(keys_w)
        os.close(keys_r)
        if port.master >= 0:
            os.close(port.master)
    assert not t.is_alive()


def test_console_reads_filters_and_logs(
    running: tuple[FakePort, Screen, int, Console, Path],
) -> None:
    port, screen, _keys, console, log = running
    port.board_says("[      0.100] D app: noisy\n[      0.200] I app: humigraph 0.1.0\n")
    text = screen.wait_for("I app: humigraph 0.1.0")
    assert "noisy" not in text  # --level info
    console.stop()
    time.sleep(0.2)
    logged = log.read_text()
    assert "D app: noisy" in logged and "I app: humigraph" in logged  # the log keeps everything


def test_keys_go_to_the_board_and_ctrl_bracket_quits(
    running: tuple[FakePort, Screen, int, Console, Path],
) -> None:
    port, screen, keys, console, _log = running
    os.write(keys, b"\x03status()\r")
    assert port.read() == b"\x03status()\r"
    # a prompt without a newline is shown once the board pauses
    port.board_says(">>> ")
    screen.wait_for(">>> ")
    os.write(keys, b"\x14\x14")  # Ctrl-T Ctrl-T sends one Ctrl-T
    assert port.read() == b"\x14"
    os.write(keys, b"\x14h")
    screen.wait_for("Ctrl-] quit")
    os.write(keys, b"\x1d")
    deadline = time.monotonic() + 5
    while console._ser is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert console._ser is None


def test_reset_key_on_a_port_without_rts_uses_the_repl(
    running: tuple[FakePort, Screen, int, Console, Path],
) -> None:
    port, screen, keys, _console, _log = running
    os.write(keys, b"\x14r")
    screen.wait_for("--- reset (")
    got = port.read()
    if b"machine.reset()" in got:  # a pty has no modem lines
        assert got == b"\r\x03\x03import machine; machine.reset()\r"


def test_console_survives_unplug_and_replug(
    running: tuple[FakePort, Screen, int, Console, Path],
) -> None:
    port, screen, _keys, console, _log = running
    port.board_says("[      1.000] I app: before\n")
    screen.wait_for("I app: before")
    port.unplug()
    screen.wait_for("is gone; waiting for it to come back")
    time.sleep(0.5)
    port.plug()
    screen.wait_for("is back; carrying on")
    port.board_says("[      0.010] I app: after\n")
    screen.wait_for("I app: after")
    assert console.reconnects == 1


def test_missing_port_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConsoleError, match="does not exist"):
        Console(str(tmp_path / "nope"), out=io.StringIO()).run(stdin=None)
