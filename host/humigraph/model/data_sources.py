"""Loaders behind :func:`humigraph.model.data.load`: one function per data SPEC.

``world:SEED[?days=D&rooms=R&faults=P&step=S&condensation=0|1]`` (seeds ``3``, ``1-4`` or
``1,5``), ``room-climate:DIR``, ``uci-occupancy:DIR``, ``csv:FILE``, ``sqlite:///PATH``,
``postgresql://...``. Every error names the SPEC and says what would work.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from ..errors import UsageError
from .data_types import Recording, fault_index
from .inject import label_spikes_shown

__all__ = ["SPEC_HELP", "load"]

DAY = 86400.0
SPEC_HELP = (
    "world:SEED[?days=D&rooms=R&faults=P], room-climate:DIR, uci-occupancy:DIR, csv:FILE, "
    "sqlite:///PATH or postgresql://..."
)


def load(spec: str, *, limit_days: float | None = None) -> list[Recording]:
    """Recordings named by a data SPEC. ``limit_days`` caps the data loaded: a world simulates at
    most that many days; file and database sources keep recordings (in name order, each cut to
    fit) until their total span reaches it."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"--data: empty SPEC; use {SPEC_HELP}")
    if limit_days is not None and not limit_days > 0:
        raise UsageError(f"limit_days must be positive, got {limit_days}")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    loaders: dict[str, Callable[[str, str, float | None], list[Recording]]] = {
        "world": _world,
        "room-climate": _room_climate,
        "uci-occupancy": _uci,
        "csv": _csv,
        "sqlite": _sqlite,
        "postgresql": _postgres,
        "postgres": _postgres,
    }
    if not sep or kind not in loaders:
        raise UsageError(f"--data {spec!r}: unknown data SPEC; use {SPEC_HELP}")
    recs = loaders[kind](spec, rest, limit_days)
    if not recs:
        raise UsageError(f"--data {spec!r}: no readings found")
    if kind != "world" and limit_days is not None:
        recs = _limit(recs, limit_days)
    return recs


# ---------------------------------------------------------------- helpers


def _limit(recs: list[Recording], days: float) -> list[Recording]:
    budget = days * DAY
    out: list[Recording] = []
    for r in sorted(recs, key=lambda r: r.name):
        if budget <= 0:
            break
        if r.duration_s > budget:
            r = _cut(r, r.start, r.start + budget)
        out.append(r)
        budget -= max(r.duration_s, 1.0)
    return out


def _cut(rec: Recording, t0: float, t1: float) -> Recording:
    """The part of ``rec`` with ``t0 <= ts <= t1`` (a copy)."""
    r = rec.copy()
    for i in range(len(r.nodes)):
        keep = (r.ts[i] >= t0) & (r.ts[i] <= t1)
        r.ts[i], r.t[i], r.rh[i], r.ok[i] = (a[keep] for a in (r.ts[i], r.t[i], r.rh[i], r.ok[i]))
        if r.truth_t is not None and r.truth_rh is not None:
            r.truth_t[i], r.truth_rh[i] = r.truth_t[i][keep], r.truth_rh[i][keep]
        if r.faults is not None:
            fts, lab = r.faults[i]
            k = (fts >= t0) & (fts <= t1)
            r.faults[i] = (fts[k], lab[k])
    for name in ("occupancy", "ventilation"):
        series = getattr(r, name)
        if series is not None:
            k = (series[0] >= t0) & (series[0] <= t1)
            setattr(r, name, (series[0][k], series[1][k]))
    return r


def _query(spec: str, rest: str) -> tuple[str, dict[str, str]]:
    head, _, q = rest.partition("?")
    try:
        params = dict(parse_qsl(q, strict_parsing=True)) if q else {}
    except ValueError:
        raise UsageError(f"--data {spec!r}: cannot read the options after '?' ({q!r})") from None
    return head, params


def _num(
    spec: str, params: dict[str, str], key: str, default: float, lo: float, hi: float
) -> float:
    raw = params.pop(key, None)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise UsageError(f"--data {spec!r}: {key}={raw!r} is not a number") from None
    if not lo <= v <= hi:
        raise UsageError(f"--data {spec!r}: {key}={raw} must be between {lo:g} and {hi:g}")
    return v


def _seeds(spec: str, text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            a, dash, b = part.strip().partition("-")
            lo = int(a)
            hi = int(b) if dash else lo
            if hi < lo or hi - lo > 1000:
                raise ValueError
            seeds.extend(range(lo, hi + 1))
    except ValueError:
        raise UsageError(
            f"--data {spec!r}: the seed must be an integer, a range (1-4) or a list (1,5)"
        ) from None
    return seeds


def _group_nodes(
    name: str, site: str, rows: dict[str, list[tuple[float, float, float, bool]]]
) -> Recording:
    """Per-node row lists ``(ts, t, rh, ok)`` -> a Recording with nodes in name order."""
    nodes = sorted(rows)
    ts, t, rh, ok = [], [], [], []
    for dev in nodes:
        a = np.array(rows[dev], dtype=np.float64).reshape(-1, 4)
        a = a[np.argsort(a[:, 0], kind="stable")]
        good = (a[:, 3] > 0) & np.isfinite(a[:, 1]) & np.isfinite(a[:, 2])
        ts.append(a[:, 0])
        t.append(np.where(good, a[:, 1], np.nan))
        rh.append(np.where(good, a[:, 2], np.nan))
        ok.append(good)
    return Recording(name=name, site=site, nodes=nodes, ts=ts, t=t, rh=rh, ok=ok)


def _float(x: Any) -> float:
    if x is None or x == "":
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- world


def _world(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    from ..world.export import DEFAULT_START, generate

    head, params = _query(spec, rest)
    seeds = _seeds(spec, head)
    days = _num(spec, params, "days", 2.0, 1 / 24, 365)
    rooms = int(_num(spec, params, "rooms", 10, 1, 64))
    rate = _num(spec, params, "faults", 0.0, 0.0, 1.0)
    step = _num(spec, params, "step", 60.0, 1.0, 3600.0)
    condensation = _num(spec, params, "condensation", 1, 0, 1) > 0
    if params:
        raise UsageError(
            f"--data {spec!r}: unknown option(s) {sorted(params)}; "
            f"world takes days, rooms, faults, step, condensation"
        )
    if limit_days is not None:
        days = min(days, limit_days)
    recs: list[Recording] = []
    for seed in seeds:
        site, trace, cols = generate(
            seed,
            days,
            rooms=rooms,
            step=step,
            fault_rate=rate,
            site_name=f"world{seed}",
            condensation_faults=condensation,
        )
        k = len(site.sensors)
        n = len(trace.times)

        # generate() interleaves rows (time i, sensor j at i*k + j): reshape to [sensor, time]
        c = {
            name: cols[name].reshape(n, k).T
            for name in ("ts", "t", "rh", "ok", "t_true", "rh_true", "fault_class")
        }
        ts, t, rh, ok = c["ts"].astype(float), c["t"], c["rh"], c["ok"].astype(bool)
        truth_t, truth_rh = c["t_true"], c["rh_true"]
        classes = np.vectorize(fault_index, otypes=[np.int64])(c["fault_class"])
        classes = np.stack(
            [_spikes_shown(ts[i], t[i], truth_t[i], ok[i], classes[i]) for i in range(k)]
        )
        occ = (np.asarray(trace.occupants).sum(axis=1) > 0).astype(np.int64)
        vent = np.asarray(trace.window).any(axis=1).astype(np.int64)
        adjacency = site.sensor_adjacency()
        nodes = [s.dev for s in site.sensors]
        n_days = max(1, math.ceil(days - 1e-9))
        for d in range(n_days):
            t0, t1 = DEFAULT_START + d * DAY, DEFAULT_START + (d + 1) * DAY
            sel = (trace.times >= t0) & (trace.times < t1)
            if not sel.any():
                continue
            recs.append(
                Recording(
                    name=f"world:{seed}/day{d}",
                    site=site.name,
                    nodes=list(nodes),
                    ts=[a[sel] for a in ts],
                    t=[a[sel] for a in t],
                    rh=[a[sel] for a in rh],
                    ok=[a[sel] for a in ok],
                    truth_t=[a[sel] for a in truth_t],
                    truth_rh=[a[sel] for a in truth_rh],
                    occupancy=(trace.times[sel], occ[sel]),
                    ventilation=(trace.times[sel], vent[sel]),
                    faults=[(ts[i][sel], classes[i][sel]) for i in range(k)],
                    adjacency=adjacency.copy(),
                    meta={"source": "world", "seed": seed, "day": d, "rooms": rooms},
                )
            )
    return recs


# a world spike moves the temperature by 5-15 °C (world/faults.py); a healthy sensor's reading
# stays within its bias and noise of the truth
_SPIKE_SEEN_T = 3.0


def _spikes_shown(
    ts: np.ndarray, t: np.ndarray, t_true: np.ndarray, ok: np.ndarray, lab: np.ndarray
) -> np.ndarray:
    """The world simulator labels a spiking sensor over its whole stretch; the model is told
    what a window shows instead, as for injected spikes (inject.label_spikes_shown): the reads
    that jumped are those far from the truth, past the sensor's own bias."""
    spike = fault_index("spike")
    if not (lab == spike).any():
        return lab
    off = np.asarray(t, float) - np.asarray(t_true, float)
    fin = np.isfinite(off) & np.asarray(ok, bool)
    good = fin & (lab == 0)
    bias = float(np.median(off[good])) if good.any() else 0.0
    jumped = (lab == spike) & fin & (np.abs(off - bias) > _SPIKE_SEEN_T)
    return label_spikes_shown(ts, lab, jumped)


# ---------------------------------------------------------------- real datasets


def _dir(spec: str, rest: str, what: str) -> Path:
    path = Path(rest).expanduser()
    if not rest or not path.is_dir():
        raise UsageError(
            f"--data {spec!r}: {rest!r} is not a directory; give the folder holding the {what}"
        )
    return path


def _room_climate(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    """Room-Climate (Morgner et al. 2017): one Recording per measurement file, 4 nodes.

    Columns ``EID, AbsT[ms], RelT, NID, Temp, RelH, L1, L2, Occ, Act, Door, Win``.
    """
    root = _dir(spec, rest, "room_climate-*.csv measurement files")
    files = sorted(root.glob("*.csv"))
    if not files:
        raise UsageError(f"--data {spec!r}: no .csv measurement files in {root}")
    out: list[Recording] = []
    for f in files:
        try:
            a = np.loadtxt(f, delimiter=",", ndmin=2)
        except ValueError as e:
            raise UsageError(f"--data {spec!r}: {f.name} is not a Room-Climate file: {e}") from None
        if a.shape[1] < 12:
            raise UsageError(
                f"--data {spec!r}: {f.name} has {a.shape[1]} columns, Room-Climate has 12 "
                f"(EID, AbsT, RelT, NID, Temp, RelH, L1, L2, Occ, Act, Door, Win)"
            )
        a = a[np.argsort(a[:, 1], kind="stable")]
        ts = a[:, 1] / 1000.0
        nids = sorted({int(x) for x in a[:, 3]})
        nodes = [f"node{n}" for n in nids]
        sel = [a[:, 3] == n for n in nids]
        good = [np.isfinite(a[s, 4]) & np.isfinite(a[s, 5]) for s in sel]
        out.append(
            Recording(
                name=f"{root.name}/{f.name}",
                site=root.name,
                nodes=nodes,
                ts=[ts[s] for s in sel],
                t=[a[s, 4] for s in sel],
                rh=[a[s, 5] for s in sel],
                ok=good,
                occupancy=(ts, (a[:, 8] > 0).astype(np.int64)),
                ventilation=(ts, ((a[:, 10] > 0) | (a[:, 11] > 0)).astype(np.int64)),
                meta={"source": "room-climate", "file": str(f)},
            )
        )
    return out


def _uci(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    """UCI Occupancy Detection (Candanedo and Feldheim 2016): one Recording per file."""
    root = _dir(spec, rest, "UCI files datatraining.txt, datatest.txt, datatest2.txt")
    files = sorted(root.glob("*.txt"))
    if not files:
        raise UsageError(f"--data {spec!r}: no .txt files (datatraining.txt, ...) in {root}")
    out: list[Recording] = []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"date", "Temperature", "Humidity", "Occupancy"}
            if not need <= set(reader.fieldnames or ()):
                raise UsageError(
                    f"--data {spec!r}: {f.name} lacks columns {sorted(need)} of the UCI dataset"
                )
            rows = list(reader)
        ts = np.array(
            [
                datetime.strptime(r["date"], "%Y-%m-%d %H:%M:%S")
                .replace(tzinfo=timezone.utc)
                .timestamp()
                for r in rows
            ]
        )
        t = np.array([_float(r["Temperature"]) for r in rows])
        rh = np.array([_float(r["Humidity"]) for r in rows])
        occ = np.array([int(float(r["Occupancy"])) for r in rows], dtype=np.int64)
        o = np.argsort(ts, kind="stable")
        ts, t, rh, occ = ts[o], t[o], rh[o], occ[o]
        good = np.isfinite(t) & np.isfinite(rh)
        out.append(
            Recording(
                name=f"{root.name}/{f.name}",
                site=root.name,
                nodes=["office"],
                ts=[ts],
                t=[t],
                rh=[rh],
                ok=[good],
                occupancy=(ts, occ),
                meta={"source": "uci-occupancy", "file": str(f)},
            )
        )
    return out


# ---------------------------------------------------------------- csv


def _csv(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    """``ts,dev,site,t,rh`` (plus ``ok``; a world export's truth, label and room columns are used
    when present, and its ``.graph.json`` gives the true adjacency)."""
    path = Path(rest).expanduser()
    if not rest or not path.is_file():
        raise UsageError(f"--data {spec!r}: no such file {rest!r}")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        need = {"ts", "dev", "site", "t", "rh"}
        if not need <= cols:
            raise UsageError(
                f"--data {spec!r}: {path.name} lacks column(s) {sorted(need - cols)}; "
                f"the header must have ts,dev,site,t,rh"
            )
        rows = list(reader)
    world = {"t_true", "rh_true", "fault_class"} <= cols
    by_site: dict[str, dict[str, list[dict[str, str]]]] = {}
    for lineno, r in enumerate(rows, start=2):
        if not r["dev"] or not r["site"] or not math.isfinite(_float(r["ts"])):
            raise UsageError(f"--data {spec!r}: line {lineno} needs ts, dev and site: {r}")
        by_site.setdefault(r["site"], {}).setdefault(r["dev"], []).append(r)
    graph = _graph(path) if world else None
    out: list[Recording] = []
    for site in sorted(by_site):
        devs = by_site[site]
        if len(devs) > 64:
            raise UsageError(
                f"--data {spec!r}: site {site!r} has {len(devs)} devices, at most 64 per site"
            )
        table = {
            dev: [
                (
                    _float(r["ts"]),
                    _float(r["t"]),
                    _float(r["rh"]),
                    _truthy(r.get("ok", "1")),
                )
                for r in rs
            ]
            for dev, rs in devs.items()
        }
        rec = _group_nodes(f"csv:{path.name}/{site}", site, table)
        rec.meta = {"source": "csv", "file": str(path)}
        if world:
            _world_columns(rec, devs, graph)
        out.append(rec)
    return out


def _truthy(x: str | None) -> bool:
    return str(x).strip().lower() in ("1", "true", "yes", "t", "1.0")


def _graph(csv_path: Path) -> dict[str, Any] | None:
    g = csv_path.with_suffix(".graph.json")
    try:
        return json.loads(g.read_text()) if g.is_file() else None
    except (OSError, ValueError):
        return None


def _world_columns(
    rec: Recording, devs: dict[str, list[dict[str, str]]], graph: dict[str, Any] | None
) -> None:
    """Truth, fault labels, occupancy and windows from a world export's extra columns."""
    rec.truth_t, rec.truth_rh, rec.faults = [], [], []
    occ: dict[float, int] = {}
    vent: dict[float, int] = {}
    for dev in rec.nodes:
        rs = sorted(devs[dev], key=lambda r: _float(r["ts"]))
        ts = np.array([_float(r["ts"]) for r in rs])
        rec.truth_t.append(np.array([_float(r["t_true"]) for r in rs]))
        rec.truth_rh.append(np.array([_float(r["rh_true"]) for r in rs]))
        lab = np.array([fault_index(r["fault_class"] or "ok") for r in rs])
        t = np.array([_float(r["t"]) for r in rs])
        ok = np.array([_truthy(r.get("ok", "1")) for r in rs])
        rec.faults.append((ts, _spikes_shown(ts, t, rec.truth_t[-1], ok, lab)))
        for when, r in zip(ts.tolist(), rs, strict=True):
            if "occupants" in r:
                occ[when] = max(occ.get(when, 0), int(_float(r["occupants"]) > 0))
            if "window_open" in r:
                vent[when] = max(vent.get(when, 0), int(_truthy(r["window_open"])))
    for name, d in (("occupancy", occ), ("ventilation", vent)):
        if d:
            keys = np.array(sorted(d))
            setattr(rec, name, (keys, np.array([d[k] for k in keys.tolist()], dtype=np.int64)))
    if graph and "sensor_adjacency" in graph and "sensors" in graph:
        order = [s["dev"] for s in graph["sensors"]]
        full = np.asarray(graph["sensor_adjacency"], dtype=float)
        if set(rec.nodes) <= set(order) and full.shape == (len(order), len(order)):
            idx = [order.index(d) for d in rec.nodes]
            rec.adjacency = full[np.ix_(idx, idx)]


# ---------------------------------------------------------------- gateway stores

_QUERY = "SELECT site, dev, placed_ts, t, rh, ok FROM readings"


def _from_rows(prefix: str, rows: Iterable[tuple[Any, ...]], source: str) -> list[Recording]:
    by_site: dict[str, dict[str, list[tuple[float, float, float, bool]]]] = {}
    for site, dev, ts, t, rh, ok in rows:
        by_site.setdefault(str(site), {}).setdefault(str(dev), []).append(
            (_float(ts), _float(t), _float(rh), bool(ok))
        )
    out = []
    for site in sorted(by_site):
        rec = _group_nodes(f"{prefix}/{site}", site, by_site[site])
        rec.meta = {"source": source}
        out.append(rec)
    return out


def _since(limit_days: float | None, newest: float | None) -> float:
    if limit_days is None or newest is None:
        return -math.inf
    return float(newest) - limit_days * DAY


def _sqlite(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    if not spec.startswith("sqlite:///"):
        raise UsageError(f"--data {spec!r}: write sqlite:///PATH (three slashes, then the path)")
    raw = spec[len("sqlite:///") :]
    path = Path("/" + raw.lstrip("/")) if spec.startswith("sqlite:////") else Path(raw)
    if not path.is_file():
        raise UsageError(f"--data {spec!r}: no such database file {str(path)!r}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise UsageError(f"--data {spec!r}: cannot open {path}: {e}") from None
    try:
        newest = conn.execute("SELECT MAX(placed_ts) FROM readings").fetchone()[0]
        rows = conn.execute(
            _QUERY + " WHERE placed_ts >= ? ORDER BY site, dev, placed_ts",
            (_since(limit_days, newest),),
        ).fetchall()
    except sqlite3.Error as e:
        raise UsageError(
            f"--data {spec!r}: {path} has no gateway readings table ({e}); point at the "
            f"database `humigraph gateway --db` writes"
        ) from None
    finally:
        conn.close()
    return _from_rows(f"sqlite:{path.name}", rows, "sqlite")


def _hide_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for error messages)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _postgres(spec: str, rest: str, limit_days: float | None) -> list[Recording]:
    url, spec = spec, _hide_password(spec)
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            f"--data {spec!r}: PostgreSQL needs psycopg: pip install 'humigraph[postgres]'"
        ) from None
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            newest = conn.execute("SELECT MAX(placed_ts) FROM readings").fetchone()
            since = _since(limit_days, newest[0] if newest else None)
            rows = conn.execute(
                _QUERY + " WHERE placed_ts >= %s ORDER BY site, dev, placed_ts", (since,)
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        raise UsageError(
            f"--data {spec!r}: the database has no `readings` table; it is created by "
            f"`humigraph gateway --db {spec}` when the gateway first runs against it"
        ) from None
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--data {spec!r}: cannot read from PostgreSQL: {first}") from None
    where = spec.rsplit("/", 1)[-1].split("?")[0] or "postgres"
    return _from_rows(f"postgresql:{where}", rows, "postgresql")
