"""`humigraph demo` as a user runs it: six boards report, the scripted events raise their alerts,
the Wi-Fi loss is replayed with nothing lost, the committed model runs, the dashboard is served,
and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from humigraph.demo import DEMO_BOARDS, REPO_MODEL
from support.waiting import wait_until as support_wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# kind -> the board the script makes raise it
SCRIPTED_ALERTS = {
    "offline": "bed-1",  # Wi-Fi lost at 0:30
    "condensation": "bath-1",  # shower from 0:15
    "stuck": "office-1",  # stuck from 0:20
    "spike": "office-1",  # spiking from 0:50
}


def _left_behind(tag: str) -> list[str]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if tag in line]


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            return r.status, (json.loads(body) if "json" in r.headers["Content-Type"] else body)
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def wait_until(pred: Callable[[], Any], timeout: float, what: str, lines: list[str]) -> Any:
    tail = lambda: "output:\n" + "\n".join(lines[-40:])  # noqa: E731
    return support_wait(pred, timeout, what, every=1.0, detail=tail)


def test_demo_shows_every_feature_and_stops_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "humigraph"
    # Every temp dir of the demo (flash, control dirs, the broker's, the database) lands under
    # tmp_path, so any process still naming it afterwards was left behind.
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path))
    args = [str(exe), "demo", "--http", "127.0.0.1:0"]
    assert REPO_MODEL.is_file(), f"{REPO_MODEL} is missing: the demo runs the committed model"
    p = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    assert p.stdout is not None
    stdout = p.stdout
    reader = threading.Thread(target=lambda: lines.extend(x.rstrip() for x in stdout), daemon=True)
    reader.start()
    try:
        url = wait_until(
            lambda: next(
                (m.group(1) for x in lines if (m := re.match(r"dashboard: (\S+)", x))), None
            ),
            60,
            "the dashboard's address",
            lines,
        ).rstrip("/")
        status, page = get(url + "/")
        assert status == 200 and "humigraph" in page

        def all_online() -> bool:
            _, devs = get(url + "/api/devices")
            return sorted(d["dev"] for d in devs or [] if d["online"]) == sorted(DEMO_BOARDS)

        wait_until(all_online, 60, "all six boards online", lines)

        def alerts_seen() -> bool:
            _, alerts = get(url + "/api/alerts")
            seen = {(a["kind"], a["dev"]) for a in alerts or []}
            return all(item in seen for item in SCRIPTED_ALERTS.items())

        wait_until(alerts_seen, 150, f"the scripted alerts {SCRIPTED_ALERTS}", lines)
        for kind, dev in SCRIPTED_ALERTS.items():  # the terminal tells them too
            assert any(f"{kind} {dev}:" in x for x in lines if "alert " in x), (kind, dev)

        # bed-1 was back online from 1:00 and replayed its buffer: nothing missing.
        wait_until(all_online, 60, "bed-1 back online", lines)
        time.sleep(10)  # the replay is a few dozen readings
        _, devs = get(url + "/api/devices")
        by_dev = {d["dev"]: d for d in devs}
        assert by_dev["bed-1"]["gaps"] == 0
        counts = {
            dev: len(get(f"{url}/api/readings?dev={dev}&limit=10000")[1]) for dev in DEMO_BOARDS
        }
        assert counts["bed-1"] >= counts["hall-1"] - 5, counts  # the outage's readings are there

        # The model runs: every board has a forecast, and the site its insight.
        for dev in DEMO_BOARDS:
            status, fc = get(f"{url}/api/forecast?dev={dev}")
            assert status == 200 and len(fc["t"]) == len(fc["horizons"]) == 3, (dev, fc)
        status, insight = get(url + "/api/insight?site=home")
        assert status == 200 and 0 <= insight["occupancy"] <= 1
        assert any(x.startswith("model: ") and "none" not in x for x in lines)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # its session; the boards die with their parent
            p.wait()
            raise
        reader.join(10)
    assert p.returncode == 0, "\n".join(lines[-30:])
    assert lines[-1] == "stopped.", "\n".join(lines[-30:])
    time.sleep(0.5)
    assert not _left_behind(str(tmp_path)), f"processes left behind: {_left_behind(str(tmp_path))}"
