"""The real recordings in ../shared/data, for the tests that measure against them; each getter
skips the test when the folder is absent (the project must not copy them)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def need(sub: str) -> Path:
    p = DATA / sub
    if not p.exists():
        pytest.skip(f"{p} is absent (real datasets live in ../shared/data)")
    return p


def esp32_dht22() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts, t, rh)`` of the ESP32 + DHT22 log (one board, about one read a minute), its local
    times read as UTC; rows whose time does not parse (a stray first line) are left out."""
    rows = []
    with open(need("esp32-dht22/data_2025_08_30.csv")) as fh:
        for r in csv.reader(fh):
            try:
                when = dt.datetime.strptime(r[0], "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
            rows.append(
                (when.replace(tzinfo=dt.timezone.utc).timestamp(), float(r[1]), float(r[2]))
            )
    a = np.array(rows)
    return a[:, 0], a[:, 1], a[:, 2]
