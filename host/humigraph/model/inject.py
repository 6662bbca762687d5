"""Seeded sensor faults injected into recordings, with labels (fault taxonomy after de Bruijn
et al. 2016, "Benchmark datasets for fault detection and classification in sensor data").

Magnitudes are those of a DHT22 / AM2302 going bad (docs/model-data.md has the table); drift is
compressed in time (months of ageing inside one fault stretch) so it shows in a 32-minute window.
Injected values keep the recording's own resolution, so rounding never gives a fault away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .data_types import Recording, fault_index, label_at, name_seed

__all__ = ["INJECTED_KINDS", "Injection", "inject_faults", "label_spikes_shown"]

INJECTED_KINDS = ("stuck", "spike", "drift", "noise", "dropout")
SEGMENT_S = 6 * 3600.0  # at most one fault per node per 6 h of recording
MIN_FAULT_S = 10 * 60.0

# magnitudes (°C, %RH); see docs/model-data.md
SPIKES_PER_MIN = 0.15  # a 32-minute window of a spiking sensor shows ~5 spikes
SPIKE_MEMORY_S = 32 * 60.0  # the model's window: how long a spike keeps its label (see _apply)
SPIKE_T = (5.0, 15.0)
SPIKE_RH = (15.0, 45.0)
DRIFT_T = (0.5, 2.0)  # offset reached at the end of the stretch
DRIFT_RH = (3.0, 10.0)
NOISE_T = (0.3, 1.5)  # standard deviation
NOISE_RH = (1.0, 5.0)
DROPOUT_BURST_S = 300.0
DROPOUT_P = (0.9, 0.15)  # failure probability inside / outside a burst
RH_MAX = 99.9


def label_spikes_shown(
    ts: np.ndarray, lab: np.ndarray, spike_read: np.ndarray, memory_s: float = SPIKE_MEMORY_S
) -> np.ndarray:
    """Spike labels that say what a window ending at each read shows: ``spike`` where a spiking
    read lies in the last ``memory_s`` seconds (the model's window), where the label was ``ok``
    or ``spike``; a read labelled ``spike`` with no spike that recent becomes ``ok``.

    ``lab`` holds per-read FAULT_CLASSES indices over whole fault stretches (the world
    simulator's labels); ``spike_read`` marks the reads that jumped. Other classes are kept."""
    ts = np.asarray(ts, float)
    lab = np.asarray(lab)
    spike = fault_index("spike")
    st = np.sort(ts[np.asarray(spike_read, bool)])
    k = np.searchsorted(st, ts, side="right")
    recent = np.zeros(len(ts), bool)
    if len(st):
        recent = (k > 0) & (ts - st[np.clip(k - 1, 0, None)] < memory_s)
    out = lab.copy()
    out[lab == spike] = 0
    out[recent & ((lab == 0) | (lab == spike))] = spike
    return out


@dataclass(frozen=True)
class Injection:
    node: str
    kind: str
    onset: float  # unix seconds
    end: float


def _resolution(values: np.ndarray) -> float:
    """The smallest step between distinct readings, snapped to a power of ten (0.1 for a DHT22)."""
    v = np.unique(np.round(values[np.isfinite(values)], 6))
    if len(v) < 2:
        return 0.1
    d = np.diff(v)
    d = d[d > 1e-9]
    return float(10.0 ** np.round(np.log10(d.min()))) if len(d) else 0.1


def _quantize(x: np.ndarray, res: float) -> np.ndarray:
    return np.round(np.round(x / res) * res, 6)


def inject_faults(
    recs: Sequence[Recording],
    *,
    rate: float,
    seed: int,
    kinds: Sequence[str] = INJECTED_KINDS,
    spike_memory_s: float = SPIKE_MEMORY_S,
) -> list[Recording]:
    """Copies of ``recs`` where about ``rate`` of each node's 6-hour segments (every node of a
    short recording: one segment) hold one fault, labelled in ``faults``; a recording's faults
    take the kinds in turn from a seeded shuffle, so few faults still cover several kinds.

    Recordings without truth get their pre-injection readings as the reference (``truth_t``,
    ``truth_rh``), so forecast targets stay those of the healthy sensor. Labels already present
    (a world's) are kept outside the injected stretches. Each recording's faults depend only on
    ``seed`` and its name. The injections are listed in ``rec.meta["injected"]``. Nodes listed
    in ``rec.meta["no_faults"]`` get none (training's deep-sleep boards, commands.thin_some);
    the others keep the stretches they get without the list (the kinds, taken in turn, move up).

    Labels cover the stretch, except for spikes: those are labelled from the stretch's first
    spike until ``spike_memory_s`` (pass the model's window, ``card.window_s``) after its last,
    i.e. while a window ending there shows one of them.
    """
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"fault rate must be between 0 and 1, got {rate}")
    unknown = [k for k in kinds if k not in INJECTED_KINDS]
    if unknown or not kinds:
        raise UsageError(f"fault kinds {unknown or '[]'}: use some of {', '.join(INJECTED_KINDS)}")
    if not spike_memory_s > 0:
        raise UsageError(f"spike_memory_s must be > 0, got {spike_memory_s}")
    return [_inject_one(r, rate, seed, tuple(kinds), spike_memory_s) for r in recs]


def _inject_one(
    rec: Recording, rate: float, seed: int, kinds: tuple[str, ...], spike_memory_s: float
) -> Recording:
    out = rec.copy()
    rng = np.random.default_rng(name_seed(seed, rec.name))
    if out.truth_t is None or out.truth_rh is None:
        out.truth_t = [np.where(ok, t, np.nan) for t, ok in zip(rec.t, rec.ok, strict=True)]
        out.truth_rh = [np.where(ok, rh, np.nan) for rh, ok in zip(rec.rh, rec.ok, strict=True)]
    if out.faults is None:
        out.faults = [(ts.copy(), np.zeros(len(ts), np.int64)) for ts in out.ts]
    done: list[Injection] = []
    # kinds cycle through a per-recording shuffle: a recording's faults are of different kinds,
    # which keeps every kind represented when there are only a few faults
    order = [kinds[k] for k in rng.permutation(len(kinds))]
    spared = set(rec.meta.get("no_faults", ()))
    for i, node in enumerate(out.nodes):
        ts = out.ts[i]
        if len(ts) < 2:
            continue
        span0, span1 = float(ts[0]), float(ts[-1])
        n_seg = max(1, int(np.ceil((span1 - span0) / SEGMENT_S)))
        edges = np.linspace(span0, span1, n_seg + 1)
        for s0, s1 in zip(edges[:-1], edges[1:], strict=True):
            # draw everything each segment so one node's choices do not shift another's
            hit, frac, where = rng.random(), rng.uniform(0.25, 0.75), rng.random()
            sub = np.random.default_rng(rng.integers(2**63))
            if hit >= rate or i in spared:
                continue
            length = s1 - s0
            dur = min(length, max(MIN_FAULT_S, frac * length))
            onset = s0 + where * (length - dur)
            kind = order[len(done) % len(order)]
            if _apply(out, i, kind, onset, onset + dur, sub, spike_memory_s):
                done.append(Injection(node, kind, float(onset), float(onset + dur)))
    out.meta["injected"] = [vars(d) for d in done]
    out.meta["inject_seed"] = seed
    out.meta["inject_rate"] = rate
    return out


def _apply(
    rec: Recording,
    i: int,
    kind: str,
    t0: float,
    t1: float,
    rng: np.random.Generator,
    spike_memory_s: float,
) -> bool:
    """Applies one fault to node ``i`` and labels it; False when the stretch has nothing to
    change (no read in it)."""
    ts, t, rh, ok = rec.ts[i], rec.t[i], rec.rh[i], rec.ok[i]
    on = (ts >= t0) & (ts < t1)
    if not on.any():
        return False
    res_t, res_rh = _resolution(t), _resolution(rh)
    good = on & ok & np.isfinite(t) & np.isfinite(rh)
    sign = rng.choice([-1.0, 1.0])
    spikes = None  # the spiking reads' indices
    if kind == "stuck":
        before = np.flatnonzero(ok & np.isfinite(t) & (ts <= t0))
        first = before[-1] if len(before) else np.flatnonzero(good)[0] if good.any() else None
        if first is None:
            return False
        t[good], rh[good] = t[first], rh[first]
    elif kind == "spike":
        interval = float(np.median(np.diff(ts))) if len(ts) > 1 else 60.0
        p = min(0.5, SPIKES_PER_MIN * interval / 60.0)
        hit = good & (rng.random(len(ts)) < p)
        idx = np.flatnonzero(hit)
        if not len(idx) and good.any():  # a spiking stretch shows at least one spike
            idx = rng.choice(np.flatnonzero(good), 1)
        which = rng.integers(0, 3, len(idx))  # 0: T, 1: RH, 2: both
        sgn = rng.choice([-1.0, 1.0], len(idx))
        dt = sgn * rng.uniform(*SPIKE_T, len(idx))
        drh = sgn * rng.uniform(*SPIKE_RH, len(idx))
        t[idx] = np.where(which != 1, _quantize(t[idx] + dt, res_t), t[idx])
        rh[idx] = np.where(
            which != 0, _quantize(np.clip(rh[idx] + drh, 0, RH_MAX), res_rh), rh[idx]
        )
        spikes = idx
    elif kind == "drift":
        frac = (ts[good] - t0) / max(t1 - t0, 1.0)
        end_t = sign * rng.uniform(*DRIFT_T)
        end_rh = rng.choice([-1.0, 1.0]) * rng.uniform(*DRIFT_RH)
        t[good] = _quantize(t[good] + end_t * frac, res_t)
        rh[good] = _quantize(np.clip(rh[good] + end_rh * frac, 0, RH_MAX), res_rh)
    elif kind == "noise":
        st, srh = rng.uniform(*NOISE_T), rng.uniform(*NOISE_RH)
        t[good] = _quantize(t[good] + rng.normal(0, st, good.sum()), res_t)
        rh[good] = _quantize(np.clip(rh[good] + rng.normal(0, srh, good.sum()), 0, RH_MAX), res_rh)
    elif kind == "dropout":
        burst_key = np.floor((ts - t0) / DROPOUT_BURST_S).astype(np.int64)
        n_bursts = int(burst_key.max()) + 1 if len(burst_key) else 0
        in_burst = rng.random(max(n_bursts, 1)) < 0.5
        p = np.where(in_burst[np.clip(burst_key, 0, max(n_bursts - 1, 0))], *DROPOUT_P)
        fail = on & (rng.random(len(ts)) < p)
        t[fail], rh[fail], ok[fail] = np.nan, np.nan, False
    lab_ts, lab = rec.faults[i]  # type: ignore[index]
    if lab_ts is not ts and not np.array_equal(lab_ts, ts):
        # labels on their own timeline: relabel at the readings' times
        lab = np.clip(label_at(lab_ts, lab, ts), 0, None)
        lab_ts = ts.copy()
    lab = lab.copy()
    if spikes is not None and len(spikes):
        # A spiking sensor looks healthy between spikes: before the stretch's first spike no
        # window can tell, and after the stretch a window still shows its last spikes. Label what
        # a window shows (de Bruijn et al. label the spike samples themselves); labelling the
        # whole stretch asked the model to guess when an injected stretch ends.
        shown = (ts >= ts[spikes].min()) & (ts < ts[spikes].max() + spike_memory_s)
        lab[shown & ((lab == 0) | on)] = fault_index(kind)
    else:
        lab[on] = fault_index(kind)
    rec.faults[i] = (lab_ts, lab)  # type: ignore[index]
    return True
