"""`humigraph demo` (first version): a broker, three virtual boards and a live view; a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _left_behind(tag: str) -> list[str]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if tag in line]


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "humigraph"
    # Every temp dir of the demo (flash, control dirs, the broker's) lands under tmp_path, so any
    # process still naming it afterwards was left behind.
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path))
    p = subprocess.Popen(
        [str(exe), "demo", "--interval", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert p.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            rows = [
                x
                for x in lines[-6:]
                if x.split()[:1] and x.split()[0] in ("living-1", "kitchen-1", "bath-1")
            ]
            if len(rows) == 3 and all(
                x.split()[1] == "online" and x.split()[2] != "-" for x in rows
            ):
                break
        text = "\n".join(lines)
        assert "broker:" in text
        for dev in ("living-1", "kitchen-1", "bath-1"):
            assert any(x.startswith(dev) and " online " in x for x in lines), (
                f"{dev} never reported:\n{text}"
            )
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    lines += out.splitlines()
    assert p.returncode == 0, "\n".join(lines[-30:])
    assert lines[-1] == "stopped."
    time.sleep(0.5)
    assert not _left_behind(str(tmp_path)), f"processes left behind: {_left_behind(str(tmp_path))}"
