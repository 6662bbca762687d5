"""Recordings from every data SPEC, held-out splits and model-ready windows (numpy only).

``load(spec)`` -> ``list[Recording]``; ``split`` holds recordings out by name; ``make_windows``
turns recordings into the arrays training, quantization calibration and evaluation feed the model,
through :func:`humigraph.model.features.resample` / :func:`~humigraph.model.features.encode` so
the gateway and the model see identical inputs. See docs/model-data.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError, UsageError
from .card import ModelCard
from .data_sources import load
from .data_types import Recording, Windows, label_at
from .features import encode, resample
from .inject import inject_faults

__all__ = [
    "Recording",
    "Windows",
    "count_windows",
    "inject_faults",
    "load",
    "make_windows",
    "reference_series",
    "split",
    "thin_node",
]


def split(
    recs: Sequence[Recording], *, holdout: float = 0.2, seed: int = 0
) -> tuple[list[Recording], list[Recording]]:
    """``(train, test)`` by recording name, never by row; deterministic for a seed and independent
    of the input order. At least one recording is held out when ``holdout > 0`` and there are two
    or more; names that repeat go to the same side."""
    if not 0.0 <= holdout < 1.0:
        raise UsageError(f"holdout must be in [0, 1), got {holdout}")
    names = sorted({r.name for r in recs})
    n_test = 0
    if holdout > 0 and len(names) >= 2:
        n_test = min(len(names) - 1, max(1, round(holdout * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    test_names = {names[i] for i in order[:n_test]}
    train = [r for r in recs if r.name not in test_names]
    test = [r for r in recs if r.name in test_names]
    return train, test


def thin_node(rec: Recording, i: int, period: float) -> None:
    """Node ``i`` of ``rec``, in place, read like a deep-sleep board: one read per ``period``
    seconds (the first at or after each multiple of it from the node's first read), its truth
    and labels with it. evaluate's ``sparse_reads`` uses it: beside boards reading as usual, the
    committed model calls a healthy Room-Climate board read every 5 minutes faulty in about half
    of the held-out windows a gateway would judge (docs/model.md)."""
    ts = np.asarray(rec.ts[i], float)
    if len(ts) < 2:
        return
    slot = np.floor((ts - ts[0]) / period)
    keep = np.r_[True, np.diff(slot) > 0]
    rec.ts[i], rec.t[i], rec.rh[i], rec.ok[i] = (
        a[keep] for a in (ts, rec.t[i], rec.rh[i], rec.ok[i])
    )
    for name in ("truth_t", "truth_rh"):
        series = getattr(rec, name)
        if series is not None and len(series[i]) == len(keep):
            series[i] = series[i][keep]
    if rec.faults is not None and len(rec.faults[i][0]) == len(keep):
        rec.faults[i] = (rec.faults[i][0][keep], rec.faults[i][1][keep])


def _sorted_node(rec: Recording, i: int) -> tuple[np.ndarray, ...]:
    """Node ``i``'s arrays sorted by time (loaders already sort; this guards hand-made ones)."""
    ts = np.asarray(rec.ts[i], dtype=np.float64)
    arrays = [ts, np.asarray(rec.t[i], float), np.asarray(rec.rh[i], float), rec.ok[i]]
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        o = np.argsort(ts, kind="stable")
        arrays = [a[o] for a in arrays]
    return tuple(arrays)


def reference_series(rec: Recording, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What node ``i`` should read: ``(t, rh, usable)`` at its ``ts``.

    With truth, it is the truth shifted by the node's own bias (median of reading - truth over its
    good, fault-free reads), so a healthy sensor's target is its own future reading without noise
    and a faulty sensor's target is what it would read if it were healthy. Without truth it is the
    measured readings themselves.
    """
    ts, t, rh, ok = _sorted_node(rec, i)
    if rec.truth_t is None or rec.truth_rh is None:
        return t, rh, np.asarray(ok, bool) & np.isfinite(t) & np.isfinite(rh)
    tt = np.asarray(rec.truth_t[i], float)
    tr = np.asarray(rec.truth_rh[i], float)
    if len(ts) > 1 and np.any(np.diff(np.asarray(rec.ts[i], float)) < 0):
        o = np.argsort(np.asarray(rec.ts[i], float), kind="stable")
        tt, tr = tt[o], tr[o]
    good = np.asarray(ok, bool) & np.isfinite(t) & np.isfinite(rh) & np.isfinite(tt)
    if rec.faults is not None:
        lab_ts, lab = rec.faults[i]
        good &= label_at(lab_ts, lab, ts) == 0
    bias_t = float(np.median(t[good] - tt[good])) if good.any() else 0.0
    bias_rh = float(np.median(rh[good] - tr[good])) if good.any() else 0.0
    return tt + bias_t, tr + bias_rh, np.isfinite(tt) & np.isfinite(tr)


def _grid(rec: Recording, step: float) -> tuple[float, int]:
    """``(last step end, number of steps)`` of the recording's grid; ends are multiples of
    ``step`` in unix time, so windows line up with the gateway's."""
    first, last = rec.start, rec.end
    if not (np.isfinite(first) and np.isfinite(last)):
        return 0.0, 0
    b0 = math.ceil(first / step) * step
    b1 = math.ceil(last / step) * step
    return b1, int(round((b1 - b0) / step)) + 1


def _ends(rec: Recording, card: ModelCard, stride_steps: int) -> np.ndarray:
    """Grid indices of the window ends: full history inside the recording, every stride, and
    at least one good read in the window (a gap in a gateway's store gives no empty windows)."""
    step = float(card.step_s)
    b1, m = _grid(rec, step)
    if m == 0:
        return np.zeros(0, np.int64)
    start = b1 - m * step
    seen = np.zeros(m, np.int64)
    for ts, ok in zip(rec.ts, rec.ok, strict=True):
        ts = np.asarray(ts, float)[np.asarray(ok, bool)]
        idx = np.ceil((ts - start) / step).astype(np.int64) - 1
        seen += np.bincount(idx[(idx >= 0) & (idx < m)], minlength=m) > 0
    reads_upto = np.concatenate([[0], np.cumsum(seen > 0)])
    ends = np.arange(card.history - 1, m, dtype=np.int64)
    in_window = reads_upto[ends + 1] - reads_upto[ends + 1 - card.history]
    return ends[in_window > 0][::stride_steps]


def count_windows(recs: Sequence[Recording], card: ModelCard, *, stride_steps: int = 1) -> int:
    """How many windows :func:`make_windows` would build without ``max_windows``."""
    return int(sum(len(_ends(r, card, stride_steps)) for r in recs))


def _check(recs: Sequence[Recording], card: ModelCard, stride_steps: int) -> list[int]:
    if stride_steps < 1:
        raise UsageError(f"stride_steps must be >= 1, got {stride_steps}")
    steps = []
    for h in card.horizons_s:
        if int(h) % card.step_s:
            raise ModelError(
                f"card: horizon {h} s is not a multiple of step_s {card.step_s}; fix the card"
            )
        steps.append(int(h) // card.step_s)
    for r in recs:
        if len(r.nodes) > card.nodes:
            raise UsageError(
                f"recording {r.name!r} has {len(r.nodes)} nodes, the model has {card.nodes} slots; "
                f"split the site or train a card with more nodes"
            )
        if len(r.ts) != len(r.nodes) or len(r.t) != len(r.nodes):
            raise UsageError(f"recording {r.name!r}: per-node arrays do not match its nodes")
    return steps


class _Site:
    """One recording resampled once onto its whole grid; windows are slices of it."""

    def __init__(self, rec: Recording, card: ModelCard) -> None:
        step = float(card.step_s)
        self.b1, self.m = _grid(rec, step)
        self.step = step
        n = len(rec.nodes)
        shape = (n, self.m)
        self.t, self.rh = np.full(shape, np.nan), np.full(shape, np.nan)
        self.present, self.fail = np.zeros(shape), np.zeros(shape)
        self.t_range, self.rh_range = np.zeros(shape), np.zeros(shape)
        self.reads = np.zeros(shape)
        self.ref_t, self.ref_rh = np.full(shape, np.nan), np.full(shape, np.nan)
        self.ref_present = np.zeros(shape)
        self.fault = np.full(shape, -1, dtype=np.int64)
        ends = self.b1 - step * np.arange(self.m - 1, -1, -1)
        for i in range(n):
            ts, t, rh, ok = _sorted_node(rec, i)
            g = resample(ts, t, rh, ok, end=self.b1, step=step, n=self.m)
            self.t[i], self.rh[i], self.present[i], self.fail[i] = g.t, g.rh, g.present, g.fail
            self.t_range[i], self.rh_range[i], self.reads[i] = g.t_range, g.rh_range, g.reads
            rt, rr, usable = reference_series(rec, i)
            g = resample(ts, rt, rr, usable, end=self.b1, step=step, n=self.m)
            self.ref_t[i], self.ref_rh[i], self.ref_present[i] = g[0], g[1], g[2]
            if rec.faults is not None:
                lab_ts, lab = rec.faults[i]
                at = label_at(lab_ts, lab, ends)
                # a label older than two steps (the node went silent) says nothing about now
                at[ends - _last_ts(lab_ts, ends) >= 2 * step] = -1
                self.fault[i] = at
        self.ends = ends
        self.insight = np.zeros((len(card.insights), self.m))
        self.insight_mask = np.zeros((len(card.insights), self.m))
        for k, name in enumerate(card.insights):
            series = getattr(rec, name, None) if name in ("occupancy", "ventilation") else None
            if series is None or not len(series[0]):
                continue
            lts = np.asarray(series[0], float)
            val = label_at(lts, (np.asarray(series[1]) > 0).astype(np.int64), ends)
            inside = (ends >= lts.min()) & (ends <= lts.max() + step) & (val >= 0)
            self.insight[k] = np.where(inside, val, 0)
            self.insight_mask[k] = inside


def _last_ts(lab_ts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    lab_ts = np.sort(np.asarray(lab_ts, float))
    k = np.searchsorted(lab_ts, ends, side="right") - 1
    return np.where(k >= 0, lab_ts[np.clip(k, 0, None)], -np.inf)


def make_windows(
    recs: Sequence[Recording],
    card: ModelCard,
    *,
    stride_steps: int = 1,
    max_windows: int | None = None,
    seed: int = 0,
) -> Windows:
    """Every window with a full history inside its recording, each ``stride_steps`` steps; with
    ``max_windows``, a seeded random subset of them (kept in time order).

    Targets: for horizon h, ``(ref(end + h) - last) / scale[h]`` (``card.scale_array()``) where ``last`` is the node's
    last encoded value and ``ref`` the step mean of :func:`reference_series`; masked where that
    step has no reference value or the node is padding. Fault labels: the class at the window's
    last step (mask 0 without labels). Insights: the site label at the window's end.
    """
    horizon_steps = _check(recs, card, stride_steps)
    plan = [(ri, j) for ri, r in enumerate(recs) for j in _ends(r, card, stride_steps)]
    if max_windows is not None:
        if max_windows < 1:
            raise UsageError(f"max_windows must be >= 1, got {max_windows}")
        if len(plan) > max_windows:
            keep = np.sort(np.random.default_rng(seed).choice(len(plan), max_windows, False))
            plan = [plan[k] for k in keep]
    w, n, h, f = len(plan), card.nodes, card.history, len(card.features)
    k_h, k_i = len(card.horizons_s), len(card.insights)
    out = Windows(
        x=np.zeros((w, n, h, f), np.float32),
        node_mask=np.zeros((w, n), np.float32),
        y_forecast=np.zeros((w, n, k_h, 2), np.float32),
        y_forecast_mask=np.zeros((w, n, k_h), np.float32),
        y_fault=np.zeros((w, n), np.int64),
        y_fault_mask=np.zeros((w, n), np.float32),
        y_insight=np.zeros((w, k_i), np.float32),
        y_insight_mask=np.zeros((w, k_i), np.float32),
        last=np.zeros((w, n, 2), np.float32),
        rec=np.zeros(w, np.int64),
        end_ts=np.zeros(w, np.float64),
    )
    scale = card.scale_array()  # [K, 2] in card.targets order: (t, rh)
    sites: dict[int, _Site] = {}
    for wi, (ri, j) in enumerate(plan):
        site = sites.get(ri)
        if site is None:
            sites.clear()  # one recording at a time keeps memory flat
            site = sites[ri] = _Site(recs[ri], card)
        sl = slice(j - h + 1, j + 1)
        enc = encode(
            site.t[:, sl], site.rh[:, sl], site.present[:, sl], site.fail[:, sl], card,
            t_range=site.t_range[:, sl], rh_range=site.rh_range[:, sl], reads=site.reads[:, sl],
        )  # fmt: skip
        nr = site.t.shape[0]
        alive = enc.mask[:nr] > 0
        out.x[wi] = enc.x
        out.node_mask[wi] = enc.mask
        out.last[wi, :nr, 0], out.last[wi, :nr, 1] = enc.last_t, enc.last_rh
        for k, hs in enumerate(horizon_steps):
            jj = j + hs
            if jj >= site.m:
                continue
            have = alive & (site.ref_present[:, jj] > 0)
            dt = (site.ref_t[:, jj] - enc.last_t) / scale[k, 0]
            drh = (site.ref_rh[:, jj] - enc.last_rh) / scale[k, 1]
            out.y_forecast[wi, :nr, k, 0] = np.where(have, dt, 0.0)
            out.y_forecast[wi, :nr, k, 1] = np.where(have, drh, 0.0)
            out.y_forecast_mask[wi, :nr, k] = have
        lab = site.fault[:, j]
        known = alive & (lab >= 0)
        out.y_fault[wi, :nr] = np.where(known, lab, 0)
        out.y_fault_mask[wi, :nr] = known
        out.y_insight[wi] = site.insight[:, j]
        out.y_insight_mask[wi] = site.insight_mask[:, j]
        out.rec[wi] = ri
        out.end_ts[wi] = site.ends[j]
    return out
