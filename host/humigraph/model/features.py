"""Readings -> the model's input window, and the model's outputs -> °C and %RH (numpy only).

Shared by training (humigraph.model.data) and the gateway, so both encode a window the same way.

Grid: step ``k`` of an ``n``-step window ending at ``end`` covers ``(end - (n-k)*step,
end - (n-1-k)*step]``. A step's value is the mean of its successful reads; ``present`` is 1 when it
has at least one, ``fail`` is the fraction of its reads that failed. Missing steps carry the last
value forward (the first present value backward), so the deltas stay finite. ``still`` (when the
card lists it) is 1 where a step repeats the one before it exactly: computed here, exactly, because
the model's int8 input scale cannot tell a 0.01 °C change from none. ``spread`` is the step's range
of reads (max - min, the wider of t and rh in their change scales): a board reading every 10 s
puts six reads in a 60 s step, and one spike among them widens that step's range alone.
``reads`` is the step's count of good reads over a full step's (one read per ``FULL_STEP_READ_S``,
capped at 1): with one read a step has no spread, as a stuck sensor's steps have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .card import ModelCard

__all__ = [
    "FULL_STEP_READ_S",
    "STEEP_RH",
    "STEEP_T",
    "Encoded",
    "Grid",
    "decode_forecast",
    "denormalize",
    "encode",
    "late_start",
    "normalize",
    "resample",
    "soft_clip",
    "soft_unclip",
    "steep_nodes",
    "unclip",
    "window",
]


# a board at the firmware's default interval reads every 10 s: six reads fill a 60 s step
FULL_STEP_READ_S = 10.0


class Grid(NamedTuple):
    """One node's readings on the window's grid, each ``[n]``."""

    t: np.ndarray  # mean of the step's good reads, NaN where it has none
    rh: np.ndarray
    present: np.ndarray  # 1 where the step has a good read
    fail: np.ndarray  # share of the step's reads that failed
    t_range: np.ndarray  # max - min of the step's good reads (0 with fewer than two)
    rh_range: np.ndarray
    reads: np.ndarray  # the step's count of good reads


def resample(
    ts: np.ndarray,
    t: np.ndarray,
    rh: np.ndarray,
    ok: np.ndarray,
    *,
    end: float,
    step: float,
    n: int,
) -> Grid:
    """One node's readings -> its :class:`Grid` of ``n`` steps ending at ``end``."""
    ts = np.asarray(ts, dtype=np.float64)
    okb = np.asarray(ok, dtype=bool)
    # bin index: ceil((ts - start) / step) - 1 so a reading exactly at a step's end belongs to it
    start = end - n * step
    idx = np.ceil((ts - start) / step).astype(np.int64) - 1
    inside = (idx >= 0) & (idx < n) & (ts > start)
    idx, okb = idx[inside], okb[inside]
    tv = np.asarray(t, dtype=np.float64)[inside]
    rv = np.asarray(rh, dtype=np.float64)[inside]
    good = okb & np.isfinite(tv) & np.isfinite(rv)
    reads = np.bincount(idx, minlength=n).astype(np.float64)
    n_ok = np.bincount(idx[good], minlength=n).astype(np.float64)
    s_t = np.bincount(idx[good], weights=tv[good], minlength=n)
    s_rh = np.bincount(idx[good], weights=rv[good], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_t = np.where(n_ok > 0, s_t / np.maximum(n_ok, 1), np.nan)
        out_rh = np.where(n_ok > 0, s_rh / np.maximum(n_ok, 1), np.nan)
        fail = np.where(reads > 0, (reads - n_ok) / np.maximum(reads, 1), 0.0)
    return Grid(
        out_t, out_rh, (n_ok > 0).astype(np.float64), fail,
        _range(idx[good], tv[good], n), _range(idx[good], rv[good], n), n_ok,
    )  # fmt: skip


def _range(idx: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Per bin max - min of ``v`` (0 for an empty bin): a spike inside a step survives the mean
    as a wide range, where noise widens every step's range alike."""
    hi, lo = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(hi, idx, v)
    np.minimum.at(lo, idx, v)
    return np.where(np.isfinite(hi), hi - lo, 0.0)


def _fill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along the last axis, then back-fill the leading NaN; all-NaN rows stay."""
    a = np.array(a, dtype=np.float64)
    n = a.shape[-1]
    valid = np.isfinite(a)
    idx = np.where(valid, np.arange(n), -1)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    first = np.argmax(valid, axis=-1)
    idx = np.where(idx < 0, first[..., None], idx)
    return np.take_along_axis(a, idx, axis=-1)


def _still(t: np.ndarray, rh: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """1 where a step repeats the step before it exactly (t and rh, both present), else 0."""
    out = np.zeros(t.shape, dtype=np.float64)
    if t.shape[-1] < 2:
        return out
    with np.errstate(invalid="ignore"):
        same = (np.abs(t[:, 1:] - t[:, :-1]) < 1e-6) & (np.abs(rh[:, 1:] - rh[:, :-1]) < 1e-6)
    out[:, 1:] = same  # NaN (an absent step) compares false
    return np.where(alive[:, None], out, 0.0)


def _reads(reads: np.ndarray | None, present: np.ndarray, card: ModelCard) -> np.ndarray:
    """A step's good reads as a share of a full step's; without counts, every present step full."""
    if reads is None:
        return np.asarray(present, dtype=np.float64)
    full = max(1.0, card.step_s / FULL_STEP_READ_S)
    return np.minimum(np.asarray(reads, dtype=np.float64) / full, 1.0)


def _spread(
    t_range: np.ndarray | None,
    rh_range: np.ndarray | None,
    card: ModelCard,
    shape: tuple[int, ...],
    alive: np.ndarray,
) -> np.ndarray:
    """The wider of a step's t and rh ranges, each in its change scale (dt, drh)."""
    out = np.zeros(shape, dtype=np.float64)
    for feat, r in (("dt", t_range), ("drh", rh_range)):
        if r is not None:
            out = np.maximum(out, normalize(feat, np.nan_to_num(np.asarray(r, np.float64)), card))
    return np.where(alive[:, None], out, 0.0)


def normalize(feat: str, values: np.ndarray, card: ModelCard) -> np.ndarray:
    """``(values - center) / scale`` of the card's ``normalization[feat]``."""
    n = card.normalization[feat]
    return (np.asarray(values, dtype=np.float64) - n.get("center", 0.0)) / n["scale"]


def soft_clip(x: np.ndarray, clip: float | None) -> np.ndarray:
    """``clip * tanh(x / clip)``: linear near 0, bounded by ``clip`` (None: unchanged)."""
    return np.asarray(x) if clip is None else clip * np.tanh(np.asarray(x) / clip)


def soft_unclip(x: np.ndarray, clip: float | None) -> np.ndarray:
    """The inverse of :func:`soft_clip` (values at the bound map to a large finite number)."""
    if clip is None:
        return np.asarray(x)
    return clip * np.arctanh(np.clip(np.asarray(x, np.float64) / clip, -1 + 1e-7, 1 - 1e-7))


def unclip(x: np.ndarray, card: ModelCard) -> np.ndarray:
    """Encoded values before the host's soft clip (ModelCard.input_clip), for the baselines that
    read levels and changes back out of a window."""
    return soft_unclip(x, card.input_clip)


def denormalize(feat: str, values: np.ndarray, card: ModelCard) -> np.ndarray:
    """The inverse of :func:`normalize`."""
    n = card.normalization[feat]
    return np.asarray(values, dtype=np.float64) * n["scale"] + n.get("center", 0.0)


STEEP_RH = 15.0  # %RH over the window
STEEP_T = 3.0  # °C over the window


def steep_nodes(x: np.ndarray, card: ModelCard) -> np.ndarray:
    """``[..., nodes]`` True where a node's readings span at least STEEP_RH or STEEP_T over
    the encoded window ``x [..., nodes, history, F]`` (a shower, cooking, a window opened)."""
    f = card.features
    span = {}
    for feat in ("dt", "drh"):
        v = denormalize(feat, unclip(x[..., f.index(feat)], card), card)
        span[feat] = v.max(axis=-1) - v.min(axis=-1)
    return (span["drh"] >= STEEP_RH) | (span["dt"] >= STEEP_T)


class Encoded:
    """An encoded window: ``x [nodes, history, F]``, ``mask [nodes]`` and each node's last value."""

    def __init__(self, x: np.ndarray, mask: np.ndarray, last_t: np.ndarray, last_rh: np.ndarray):
        self.x, self.mask, self.last_t, self.last_rh = x, mask, last_t, last_rh


def encode(
    t: np.ndarray,
    rh: np.ndarray,
    present: np.ndarray,
    fail: np.ndarray,
    card: ModelCard,
    *,
    t_range: np.ndarray | None = None,
    rh_range: np.ndarray | None = None,
    reads: np.ndarray | None = None,
) -> Encoded:
    """``[N, history]`` grids of N <= card.nodes real nodes -> the model's ``x`` and ``node_mask``.

    A node with no present step in the whole window gets mask 0 (nothing to reason about).
    """
    t = np.asarray(t, dtype=np.float64)
    n_real, hist = t.shape
    if hist != card.history:
        raise ValueError(f"window has {hist} steps, the model wants {card.history}")
    if n_real > card.nodes:
        raise ValueError(f"site has {n_real} nodes, the model has {card.nodes} slots")
    rh = np.asarray(rh, dtype=np.float64)
    tf, rhf = _fill(t), _fill(rh)
    alive = np.isfinite(tf).all(axis=1) & np.isfinite(rhf).all(axis=1)
    norm = card.normalization
    tf = np.where(alive[:, None], tf, norm["t"]["center"])
    rhf = np.where(alive[:, None], rhf, norm["rh"]["center"])
    last_t, last_rh = tf[:, -1].copy(), rhf[:, -1].copy()
    cols = {
        "t": normalize("t", tf, card),
        "rh": normalize("rh", rhf, card),
        "dt": normalize("dt", tf - last_t[:, None], card),
        "drh": normalize("drh", rhf - last_rh[:, None], card),
        "present": np.where(alive[:, None], np.asarray(present, dtype=np.float64), 0.0),
        "fail": np.asarray(fail, dtype=np.float64),
    }
    if "still" in card.features:
        cols["still"] = _still(t, rh, alive)
    if "spread" in card.features:
        cols["spread"] = _spread(t_range, rh_range, card, t.shape, alive)
    if "reads" in card.features:
        cols["reads"] = np.where(alive[:, None], _reads(reads, present, card), 0.0)
    x = np.zeros((card.nodes, hist, len(card.features)), dtype=np.float32)
    # bounded on the host, so float and int8 models see the same input (ModelCard.input_clip)
    x[:n_real] = soft_clip(np.stack([cols[f] for f in card.features], axis=-1), card.input_clip)
    mask = np.zeros(card.nodes, dtype=np.float32)
    mask[:n_real] = alive
    x[:n_real][~alive] = 0.0
    return Encoded(x, mask, last_t, last_rh)


def late_start(x: np.ndarray, nodes: Sequence[int], first: int, card: ModelCard) -> list[int]:
    """Makes encoded window ``x [nodes, history, F]`` look as if the boards of ``nodes`` started
    reading in step ``first`` (a reboot, a new board): in place, exactly what :func:`encode` gives
    for the same readings without those before ``first``. A node whose step ``first`` has no
    good read starts at its next present step instead; one with none after is left alone.
    Returns the nodes changed.

    Training shows the model such windows (a model that had only seen full histories called a
    board that had just started ``drift``); the earlier steps become absent: no read, no
    failure, the first value carried back."""
    if first <= 0:
        return []  # the board was reading from the window's start
    f = {name: k for k, name in enumerate(card.features)}
    changed = []
    for i in nodes:
        live = np.flatnonzero(x[i, first:, f["present"]] > 0)
        if not len(live):
            continue
        m = first + int(live[0])
        for name in ("t", "rh", "dt", "drh"):
            x[i, :m, f[name]] = x[i, m, f[name]]
        # steps first..m-1 keep their failed reads
        for name in ("present", "fail", "spread", "reads"):
            if name in f:
                x[i, :first, f[name]] = 0.0
        if "still" in f:
            x[i, : m + 1, f["still"]] = 0.0  # step m has no step before it to repeat
        changed.append(int(i))
    return changed


def window(
    series: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    end: float,
    card: ModelCard,
) -> Encoded:
    """Per node ``(ts, t, rh, ok)`` readings -> the window ending at ``end`` (the gateway's path)."""
    n, step = card.history, float(card.step_s)
    grids = [resample(*s, end=end, step=step, n=n) for s in series]
    if not grids:
        empty = np.zeros((0, n))
        return encode(empty, empty, empty, empty, card)
    t, rh, present, fail, t_range, rh_range, reads = (
        np.stack(col) for col in zip(*grids, strict=True)
    )
    return encode(
        t, rh, present, fail, card, t_range=t_range, rh_range=rh_range, reads=reads
    )  # fmt: skip


def decode_forecast(
    forecast: np.ndarray, last_t: np.ndarray, last_rh: np.ndarray, card: ModelCard
) -> np.ndarray:
    """Model ``forecast [nodes, K, 2]`` (or with the batch axis) -> absolute ``[N, K, 2]`` values."""
    f = np.asarray(forecast, dtype=np.float64)
    if f.ndim == 4:
        f = f[0]
    n = len(last_t)
    base = np.stack([last_t, last_rh], axis=-1)[:, None, :]
    return base + f[:n] * card.scale_array()[None]  # [K, 2]: a scale per horizon and target
