"""The data API's two containers: :class:`Recording` (readings of one site) and :class:`Windows`
(model-ready arrays). numpy only; re-exported by :mod:`humigraph.model.data`."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import UsageError
from .card import FAULT_CLASSES

__all__ = ["Recording", "Windows", "fault_index", "label_at", "name_seed"]


@dataclass
class Recording:
    """One site over one stretch of time. Per-node arrays are aligned: ``ts[i][k]`` is when node
    ``nodes[i]`` read ``t[i][k]``, ``rh[i][k]`` (NaN when ``ok[i][k]`` is False)."""

    name: str  # e.g. "room-climate-A/room_climate-location_A-measurement01.csv"; splits use it
    site: str
    nodes: list[str]
    ts: list[np.ndarray]
    t: list[np.ndarray]
    rh: list[np.ndarray]
    ok: list[np.ndarray]
    # the reference the forecast targets use: the true air at the node's spot (world), or the
    # pre-injection readings of a real recording after inject_faults
    truth_t: list[np.ndarray] | None = None
    truth_rh: list[np.ndarray] | None = None
    occupancy: tuple[np.ndarray, np.ndarray] | None = None  # site level (ts, 0/1)
    ventilation: tuple[np.ndarray, np.ndarray] | None = None  # (ts, 0/1) door/window open
    faults: list[tuple[np.ndarray, np.ndarray]] | None = None  # per node (ts, FAULT_CLASSES index)
    adjacency: np.ndarray | None = None  # [n, n] true coupling weights
    meta: dict[str, object] = field(default_factory=dict)  # free-form: source, seed, ...

    @property
    def start(self) -> float:
        return float(min((a[0] for a in self.ts if len(a)), default=np.nan))

    @property
    def end(self) -> float:
        return float(max((a[-1] for a in self.ts if len(a)), default=np.nan))

    @property
    def duration_s(self) -> float:
        d = self.end - self.start
        return d if np.isfinite(d) else 0.0

    def copy(self) -> Recording:
        """A deep copy of every array (safe to modify)."""

        def cp(lst: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if lst is None else [np.array(a, copy=True) for a in lst]

        def cp2(p: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
            return None if p is None else (p[0].copy(), p[1].copy())

        return replace(
            self,
            nodes=list(self.nodes),
            ts=cp(self.ts) or [],
            t=cp(self.t) or [],
            rh=cp(self.rh) or [],
            ok=cp(self.ok) or [],
            truth_t=cp(self.truth_t),
            truth_rh=cp(self.truth_rh),
            occupancy=cp2(self.occupancy),
            ventilation=cp2(self.ventilation),
            faults=None if self.faults is None else [(a.copy(), b.copy()) for a, b in self.faults],
            adjacency=None if self.adjacency is None else self.adjacency.copy(),
            meta=dict(self.meta),
        )


@dataclass
class Windows:
    """Model-ready windows; W windows, padded to the card's node slots."""

    x: np.ndarray  # [W, nodes, history, F] float32 (features.encode)
    node_mask: np.ndarray  # [W, nodes] float32
    y_forecast: np.ndarray  # [W, nodes, K, 2] float32 change from `last` / card.scale_array()
    y_forecast_mask: np.ndarray  # [W, nodes, K] float32
    y_fault: np.ndarray  # [W, nodes] int64 FAULT_CLASSES index at the window's last step
    y_fault_mask: np.ndarray  # [W, nodes] float32
    y_insight: np.ndarray  # [W, len(insights)] float32 0/1
    y_insight_mask: np.ndarray  # [W, len(insights)] float32
    last: np.ndarray  # [W, nodes, 2] float32 each node's last (t, rh) in °C, %RH
    rec: np.ndarray  # [W] int64 index into the recordings list
    end_ts: np.ndarray  # [W] float64 the window's end (unix seconds)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> Windows:
        """The windows at ``idx`` (an index array or a boolean mask)."""
        return Windows(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: list[Windows]) -> Windows:
        """Windows of several calls in one (``rec`` indices are kept as they are)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return Windows(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in Windows.__dataclass_fields__
            }
        )


def fault_index(name: str) -> int:
    """``"stuck"`` -> its index in FAULT_CLASSES; unknown names are a clear error."""
    try:
        return FAULT_CLASSES.index(name)
    except ValueError:
        raise UsageError(
            f"unknown fault class {name!r}; use one of {', '.join(FAULT_CLASSES)}"
        ) from None


def name_seed(seed: int, name: str) -> int:
    """A per-recording seed that does not depend on the recordings' order."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFFFFFF


def label_at(lab_ts: np.ndarray, lab: np.ndarray, when: np.ndarray) -> np.ndarray:
    """The label of the last labelled instant at or before each ``when`` (-1 before the first)."""
    lab_ts = np.asarray(lab_ts, float)
    if not len(lab_ts):
        return np.full(np.shape(when), -1, dtype=np.int64)
    o = np.argsort(lab_ts, kind="stable")
    k = np.searchsorted(lab_ts[o], when, side="right") - 1
    out = np.asarray(lab)[o][np.clip(k, 0, None)].astype(np.int64)
    return np.where(k >= 0, out, -1)
