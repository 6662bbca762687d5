"""``humigraph bench ingest`` runs end to end on a short stream: every drain gets every reading,
the gateway stores each exactly once. Timing goals are not checked here (docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ingest_smoke() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    out = subprocess.run(
        [sys.executable, "-m", "humigraph.cli", "bench", "ingest", "--n", "3000", "--devices",
         "30", "--naive-n", "100", "--latency-seconds", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=200, cwd=str(ROOT),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    g = r["gateway"]
    assert (g["stored"], g["distinct"], g["lost"], g["duplicates"], g["gaps"]) == (
        3000,
        3000,
        0,
        0,
        0,
    )
    assert r["goals"]["zero_loss"]["met"] is True
    assert r["mosquitto_sub"]["received"] == 3000
    assert r["naive"]["stored"] == 100
    lat = r["latency_at_half_load"]
    assert lat["readings"] >= 1 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert set(r["goals"]) == {"rate", "of_mosquitto_sub", "over_naive", "p99_ms", "zero_loss"}


def test_bench_ingest_table(capsys: pytest.CaptureFixture[str]) -> None:
    from humigraph import bench_ingest as b

    fake = {
        "mosquitto_sub": {"rate": 30000.0, "received": 10, "publish_rate": 31000.0},
        "gateway": {"rate": 21000.0, "stored": 10, "lost": 0, "duplicates": 0, "gaps": 0,
                    "batches": 1},
        "naive": {"rate": 500.0, "stored": 10},
        "latency_at_half_load": {"rate": 10500.0, "p50_ms": 20.0, "p99_ms": 90.0, "max_ms": 120.0},
        "ratios": {"of_mosquitto_sub": 0.7, "over_naive": 42.0},
        "goals": {k: {"met": True} for k in ("rate", "of_mosquitto_sub", "over_naive", "p99_ms")},
    }  # fmt: skip
    text = b.table(fake)
    assert "21,000" in text and "42.0x" in text and "p99 90 ms" in text and "NOT" not in text
