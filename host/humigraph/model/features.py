"""Readings -> the model's input window, and the model's outputs -> °C and %RH (numpy only).

Shared by training (humigraph.model.data) and the gateway, so both encode a window the same way.

Grid: step ``k`` of an ``n``-step window ending at ``end`` covers ``(end - (n-k)*step,
end - (n-1-k)*step]``. A step's value is the mean of its successful reads; ``present`` is 1 when it
has at least one, ``fail`` is the fraction of its reads that failed. Missing steps carry the last
value forward (the first present value backward), so the deltas stay finite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .card import ModelCard

__all__ = ["Encoded", "decode_forecast", "encode", "resample", "window"]


def resample(
    ts: np.ndarray,
    t: np.ndarray,
    rh: np.ndarray,
    ok: np.ndarray,
    *,
    end: float,
    step: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One node's readings -> ``(t, rh, present, fail)``, each ``[n]``; t, rh NaN where absent."""
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
    return out_t, out_rh, (n_ok > 0).astype(np.float64), fail


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
    tf, rhf = _fill(t), _fill(np.asarray(rh, dtype=np.float64))
    alive = np.isfinite(tf).all(axis=1) & np.isfinite(rhf).all(axis=1)
    norm = card.normalization
    tf = np.where(alive[:, None], tf, norm["t"]["center"])
    rhf = np.where(alive[:, None], rhf, norm["rh"]["center"])
    last_t, last_rh = tf[:, -1].copy(), rhf[:, -1].copy()
    cols = {
        "t": (tf - norm["t"]["center"]) / norm["t"]["scale"],
        "rh": (rhf - norm["rh"]["center"]) / norm["rh"]["scale"],
        "dt": (tf - last_t[:, None]) / norm["dt"]["scale"],
        "drh": (rhf - last_rh[:, None]) / norm["drh"]["scale"],
        "present": np.where(alive[:, None], np.asarray(present, dtype=np.float64), 0.0),
        "fail": np.asarray(fail, dtype=np.float64),
    }
    x = np.zeros((card.nodes, hist, len(card.features)), dtype=np.float32)
    x[:n_real] = np.stack([cols[f] for f in card.features], axis=-1)
    mask = np.zeros(card.nodes, dtype=np.float32)
    mask[:n_real] = alive
    x[:n_real][~alive] = 0.0
    return Encoded(x, mask, last_t, last_rh)


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
    t, rh, present, fail = (np.stack([g[i] for g in grids]) for i in range(4))
    return encode(t, rh, present, fail, card)


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
