"""Labelled data from the world without boards or a broker: :func:`generate` (columns in memory,
for the model's ``world:SEED`` data SPEC) and :func:`export_csv` (``humigraph world export``)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .faults import FAULT_CLASS, Fault, apply_fault, check_devices, random_faults
from .physics import Trace, abs_humidity, dew_point, rel_humidity, simulate
from .sensors import SensorUnit, hash_normal
from .site import Sensor, Site, make_site, rng_for
from .source import DAY

__all__ = ["COLUMNS", "DEFAULT_START", "export_csv", "generate", "sensor_truth"]

DEFAULT_START = 1764374400.0  # 2025-11-29 00:00 UTC
COLUMNS = (
    "ts",
    "dev",
    "site",
    "room",
    "sensor",
    "t",
    "rh",
    "ok",
    "err",
    "t_true",
    "rh_true",
    "dew_true",
    "ah_true",
    "fault",
    "fault_class",
    "occupants",
    "doors_open",
    "window_open",
    "hvac_on",
    "condensing",
    "t_out",
    "rh_out",
)


def local_wobble(seed: int, dev: str, when: np.ndarray) -> np.ndarray:
    """Smooth local air temperature deviation at a sensor's spot (°C, sd about 0.08):
    hashed knots every 5 minutes, linearly interpolated, so it is stateless."""
    from .sensors import key64

    key = key64("wobble", seed, dev)
    knot = 300.0
    k0 = np.floor(np.asarray(when) / knot) * knot
    frac = (np.asarray(when) - k0) / knot
    a = hash_normal(key, k0)
    b = hash_normal(key, k0 + knot)
    return 0.08 * (a + (b - a) * frac)


def sensor_truth(
    site: Site, sensor: Sensor, times: np.ndarray, t_room: np.ndarray, ah_room: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True air temperature and RH at the sensor's spot: the room's air plus the spot's offset
    and a small local wobble; RH from the room's moisture content at that temperature."""
    t = t_room + sensor.offset_t + local_wobble(site.seed, sensor.dev, times)
    rh = np.clip(rel_humidity(t, ah_room), 0.0, 100.0)
    return t, rh


def generate(
    seed: int,
    days: float,
    rooms: int = 10,
    step: float = 60.0,
    start: float = DEFAULT_START,
    faults: list[Fault] | None = None,
    fault_rate: float = 0.0,
    site_name: str = "home",
    progress: Callable[[str], None] | None = None,
    sensors_per_room: int | None = None,
    condensation_faults: bool = True,
) -> tuple[Site, Trace, dict[str, np.ndarray]]:
    """Simulate and read every sensor of a site; returns the site, the room trace and columns
    (``COLUMNS``, one row per reading, sorted by time then device; failed reads have NaN).

    With ``condensation_faults``, a sensor without another fault whose room condenses on a cold
    wall saturates half of the time: it reads RH 99.9 (a DHT11: 95) from the first condensation
    for 1-6 hours, labelled ``condensation``.
    """
    if days <= 0:
        raise UsageError(f"--days must be positive, got {days}")
    if not 1.0 <= step <= 3600.0:
        raise UsageError(f"--step must be between 1 and 3600 seconds, got {step}")
    site = make_site(seed, rooms, name=site_name, sensors_per_room=sensors_per_room)
    duration = days * DAY
    all_faults = list(faults or [])
    check_devices(all_faults, (s.dev for s in site.sensors))
    taken = {f.dev for f in all_faults}
    all_faults += [f for f in random_faults(site, seed, fault_rate, duration) if f.dev not in taken]
    trace = simulate(
        site,
        start,
        duration - step,
        step=step,
        progress=(lambda d: progress(f"simulated day {d:g} of {days:g}")) if progress else None,
    )
    if progress:
        progress(f"simulated {days:g} day(s) of {site.n_rooms} rooms")
    times = trace.times
    n = len(times)
    rel = times - start
    if condensation_faults:
        taken = {f.dev for f in all_faults}
        for s in site.sensors:
            wet = np.flatnonzero(trace.condensing[:, s.room])
            if s.dev in taken or not len(wet):
                continue
            rng = rng_for("condense", seed, site.name, s.dev)
            if rng.random() < 0.5:
                onset = float(rel[wet[0]])
                all_faults.append(
                    Fault(s.dev, "condensation", onset, float(rng.uniform(1.0, 6.0)) * 3600.0)
                )
    doors_open = trace.room_doors_open()
    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for s in site.sensors:
        unit = SensorUnit(seed, s.dev, s.model)
        r = s.room
        t_true, rh_true = sensor_truth(site, s, times, trace.t[:, r], trace.ah[:, r])
        t_rep, rh_rep = unit.read_series(times, t_true, rh_true)
        err = np.full(n, None, dtype=object)
        label = np.full(n, "ok", dtype=object)
        for f in all_faults:
            if f.dev != s.dev:
                continue
            apply_fault(f, unit.model, rel, times, t_rep, rh_rep, err)
            label[f.active(rel)] = f.kind
        cols["ts"].append(times)
        cols["dev"].append(np.full(n, s.dev, dtype=object))
        cols["site"].append(np.full(n, site.name, dtype=object))
        cols["room"].append(np.full(n, site.rooms[r].name, dtype=object))
        cols["sensor"].append(np.full(n, unit.model.name, dtype=object))
        cols["t"].append(t_rep)
        cols["rh"].append(rh_rep)
        cols["ok"].append(~np.isnan(t_rep))
        cols["err"].append(err)
        cols["t_true"].append(t_true)
        cols["rh_true"].append(rh_true)
        cols["dew_true"].append(dew_point(t_true, rh_true))
        cols["ah_true"].append(abs_humidity(t_true, rh_true))
        cols["fault"].append(label)
        cols["fault_class"].append(
            np.array([FAULT_CLASS.get(x, "ok") for x in label], dtype=object)
        )
        cols["occupants"].append(trace.occupants[:, r])
        cols["doors_open"].append(doors_open[:, r])
        cols["window_open"].append(trace.window[:, r])
        cols["hvac_on"].append(trace.heating[:, r])
        cols["condensing"].append(trace.condensing[:, r])
        cols["t_out"].append(trace.t_out)
        cols["rh_out"].append(trace.rh_out)
    k = len(site.sensors)
    # interleave: row i*k + j is time i, sensor j
    out = {c: np.stack(v, axis=1).reshape(n * k) for c, v in cols.items()}
    return site, trace, out


def _fmt(x: Any, nd: int) -> str:
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "1" if x else "0"
    if isinstance(x, (float, np.floating)):
        return "" if math.isnan(x) else f"{x:.{nd}f}"
    return str(x)


def export_csv(
    out: Path,
    seed: int,
    days: float,
    rooms: int = 10,
    step: float = 60.0,
    start: float = DEFAULT_START,
    faults: list[Fault] | None = None,
    fault_rate: float = 0.0,
    site_name: str = "home",
    progress: Callable[[str], None] | None = None,
    condensation_faults: bool = True,
) -> dict[str, Any]:
    """Write readings, truth and labels to ``out`` (CSV) and the coupling graph to
    ``out.graph.json``; returns a summary."""
    out = Path(out)
    if not out.parent.exists():
        raise UsageError(f"--out: directory {str(out.parent)!r} does not exist")
    site, trace, cols = generate(
        seed,
        days,
        rooms,
        step,
        start,
        faults,
        fault_rate,
        site_name,
        progress,
        condensation_faults=condensation_faults,
    )
    digits = {"ts": 1, "t": 1, "rh": 1, "t_out": 2, "rh_out": 2, "ah_true": 3}
    nrows = len(cols["ts"])
    per_day = max(1, int(round(DAY / step)) * len(site.sensors))
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        nds = [digits.get(c, 3) for c in COLUMNS]
        for i0 in range(0, nrows, per_day):
            i1 = min(nrows, i0 + per_day)
            lists = [cols[c][i0:i1].tolist() for c in COLUMNS]
            for i in range(i1 - i0):
                w.writerow([_fmt(lst[i], nd) for lst, nd in zip(lists, nds, strict=True)])
            if progress:
                progress(f"wrote {i1} of {nrows} rows")
    graph = site.graph()
    graph["start"] = start
    graph["step"] = step
    graph["days"] = days
    graph["csv"] = out.name
    faults_used = sorted(
        {(d, f) for d, f in zip(cols["dev"].tolist(), cols["fault"].tolist(), strict=True)}
    )
    graph["faults"] = [{"dev": d, "kind": f} for d, f in faults_used if f != "ok"]
    graph_path = (
        out.with_name(out.name + ".graph.json")
        if out.suffix != ".csv"
        else out.with_suffix(".graph.json")
    )
    graph_path.write_text(json.dumps(graph, indent=1) + "\n")
    return {
        "rows": nrows,
        "sensors": len(site.sensors),
        "rooms": site.n_rooms,
        "csv": str(out),
        "graph": str(graph_path),
        "failed_reads": int((~cols["ok"].astype(bool)).sum()),
    }
