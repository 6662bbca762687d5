"""Runs every firmware test script (tests/firmware/*_test.py) under the real MicroPython binary,
with the heap capped at 64 KiB as on an ESP32."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCRIPTS = sorted(p.name for p in HERE.glob("*_test.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script(script: str, micropython: Path, mpy_tmp: Path) -> None:
    env = dict(os.environ, HUMIGRAPH_TEST_TMP=str(mpy_tmp))
    env.pop("MICROPYPATH", None)
    r = subprocess.run(
        [str(micropython), "-X", "heapsize=64K", str(HERE / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(mpy_tmp),
    )
    out = r.stdout + r.stderr
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert r.returncode == 0 and last.endswith(" 0 failed"), f"{script} under MicroPython:\n{out}"
    assert not last.startswith("0 passed"), f"{script} ran no test:\n{out}"
