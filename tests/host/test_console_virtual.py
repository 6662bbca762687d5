"""``humigraph console`` on a virtual board's pty: reads and timestamps its log, filters it,
passes REPL input through, and carries on when the board (and its pty) goes away and returns."""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from humigraph.board.console import Console
from humigraph.board.virtual import VirtualBoard
from humigraph.broker import Mosquitto

pytestmark = pytest.mark.e2e

STAMP = r"\d\d:\d\d:\d\d\.\d\d\d"


class Screen(io.StringIO):
    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.getvalue(), start)
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not on the console; got:\n{self.getvalue()[-3000:]}")


def _board(m: Mosquitto, tmp: Path) -> VirtualBoard:
    return VirtualBoard(
        "kitchen-1",
        "home",
        m.url,
        serial=tmp / "tty",
        flash_dir=tmp / "flash",
        interval=2,
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    with Mosquitto() as m:
        yield m, tmp_path


def test_console_on_a_virtual_board(setup: tuple[Mosquitto, Path]) -> None:
    m, tmp = setup
    board = _board(m, tmp)
    board.start()
    screen = Screen()
    keys_r, keys_w = os.pipe()
    console = Console(str(tmp / "tty"), out=screen, color=False, level="info", grep=None)
    t = threading.Thread(target=console.run, kwargs={"stdin": keys_r}, daemon=True)
    try:
        board.wait_for_line(r"app: humigraph", timeout=20)
        t.start()
        screen.wait_for("console on")
        # the board's log, with the host's time in front
        screen.wait_for(rf"^{STAMP} \[\s*\d+\.\d{{3}}\] I mqtt: connected", 30)
        assert not re.search(r"\] D ", screen.getvalue())  # --level info
        # Ctrl-C stops the app; the REPL helper answers through the console
        os.write(keys_w, b"\x03")
        screen.wait_for(r">>> ", 15)
        mark = len(screen.getvalue())
        os.write(keys_w, b"print(6 * 7)\r")
        screen.wait_for(rf"^{STAMP} 42$", 10, mark)
        # the board goes away (its pty with it) and comes back on the same link
        board.stop()
        screen.wait_for("is gone; waiting for it to come back", 10)
        assert not (tmp / "tty").exists()
        board = _board(m, tmp)
        board.start()
        screen.wait_for("is back; carrying on", 15)
        mark = len(screen.getvalue())
        screen.wait_for(r"I mqtt: connected", 30, mark)
        assert console.reconnects == 1
    finally:
        console.stop()
        if t.is_alive():
            t.join(timeout=5)
        board.stop()
        os.close(keys_r)
        os.close(keys_w)
