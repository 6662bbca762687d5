"""The model card: everything the gateway needs to feed the model and read its outputs.

The card is a JSON file beside each ``.tflite`` (``humigraph-int8.tflite`` ->
``humigraph-int8.json``). The gateway hardcodes none of these values; training writes them.

I/O contract (tensor names are the TFLite signature's input and output names):

inputs
  ``x``          float32 ``[1, nodes, history, len(features)]``, the encoded window (features.py)
  ``node_mask``  float32 ``[1, nodes]``, 1 for a slot holding a real node, 0 for padding
outputs
  ``forecast``   ``[1, nodes, len(horizons_s), 2]``: change of (t, rh) from the node's last value,
                 divided by the horizon's ``target_scale`` (``ModelCard.scale_array()``;
                 ``decode_forecast`` turns it into °C and %RH)
  ``fault``      ``[1, nodes, len(fault_classes)]``: class probabilities
  ``insight``    ``[1, len(insights)]``: probabilities (occupancy, ventilation)
  ``adjacency``  ``[1, nodes, nodes]``: learned, sparsified; row i = how much node i listens to j
  ``router``     ``[1, nodes, 2]``: weight of (own history, neighbours) in the node's forecast
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

# ``still``: 1 where a step repeats the step before it exactly (t and rh, both present); a stuck
# sensor repeats for ever, a live one in a quiet room now and then. Exact on the host, so the
# signal survives the int8 input scale that cannot resolve a 0.01 °C change.
# ``spread``: a step's range of reads (features.py); a spike among a step's reads widens it.
# ``reads``: how many good reads a step holds, as a share of a full step's (features.py): a
# board read once a minute has one per step and no spread to show, which a stuck one shares.
FEATURES = ("t", "rh", "dt", "drh", "present", "fail", "still", "spread")
KNOWN_FEATURES = (*FEATURES, "reads")  # a card may list these; FEATURES is what `train` uses
FAULT_CLASSES = ("ok", "stuck", "spike", "drift", "noise", "dropout")
INSIGHTS = ("occupancy", "ventilation")
OUTPUTS = ("forecast", "fault", "insight", "adjacency", "router")


# a card without max_read_interval_s was trained on boards reading every 4-60 s: the gateway
# judges boards whose reads lie at most this many steps apart
SPARSE_STEPS = 1.5


@dataclass
class ModelCard:
    name: str = "humigraph"
    model_id: str = "humigraph-untrained"
    nodes: int = 64
    step_s: int = 60
    history: int = 32
    features: tuple[str, ...] = FEATURES
    # x_norm = (x - center) / scale; dt, drh are x - the node's value at the window's last step
    normalization: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "t": {"center": 21.0, "scale": 5.0},
            "rh": {"center": 45.0, "scale": 20.0},
            "dt": {"center": 0.0, "scale": 1.0},
            "drh": {"center": 0.0, "scale": 5.0},
        }
    )
    horizons_s: tuple[int, ...] = (300, 900, 1800)
    targets: tuple[str, ...] = ("t", "rh")
    # Per target: one scale for every horizon, or a list with one per horizon (the +5 min change
    # is ten times smaller than the +30 min one; a scale per horizon gives it the int8 steps).
    # Always read it through scale_array().
    target_scale: dict[str, float | list[float]] = field(
        default_factory=lambda: {"t": 1.0, "rh": 5.0}
    )
    # Every encoded feature is soft-clipped on the host to input_clip * tanh(x / input_clip)
    # (features.encode), so the float and the int8 model see the same bounded input: clipped
    # inside the model instead, a 10-sigma spike reached the float model as 3.95 but the int8
    # one as its input scale's edge. None (older cards): the model clips inside.
    input_clip: float | None = None
    fault_classes: tuple[str, ...] = FAULT_CLASSES
    # The fault decision (fault_decision()): None = the most probable class; a number = "ok"
    # unless 1 - p(ok) exceeds it, then the most probable fault class. Chosen by quantize on the
    # training recordings so that clean sensors raise few false alarms.
    fault_threshold: float | None = None
    insights: tuple[str, ...] = INSIGHTS
    # The insight decision (insight_decision()): per insight, "yes" when its probability is at
    # least this; a missing name (or None, older cards) decides at 0.5. Chosen by quantize on the
    # training recordings for the best balanced accuracy: trained on sources where ventilating
    # is rare, the model's p(ventilation) seldom passes 0.5 even when a window stands open.
    insight_threshold: dict[str, float] | None = None
    # The forecast output is companded: out = gain * asinh(change / knee), change in target
    # scales (forecast_change(); forecast_compand() below): the int8 steps are fine near 0, where
    # a quiet room's forecast lives, and coarse at the clip. None (older cards): out = change.
    forecast_compand: dict[str, float] | None = None
    # The longest interval, in seconds, between a healthy board's reads that training showed the
    # fault head (deep-sleep boards, commands.thin_some). The gateway judges boards whose reads
    # lie at most this far apart (judged_spacing_s). None (older cards, or trained with
    # --sleep-fraction 0): boards reading at the grid's pace only.
    max_read_interval_s: float | None = None
    quantization: str = "int8"  # "int8" | "float32"
    # Measured numbers (filled by quantize / evaluate); free-form JSON objects.
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "x": (1, self.nodes, self.history, len(self.features)),
            "node_mask": (1, self.nodes),
        }

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        n = self.nodes
        return {
            "forecast": (1, n, len(self.horizons_s), len(self.targets)),
            "fault": (1, n, len(self.fault_classes)),
            "insight": (1, len(self.insights)),
            "adjacency": (1, n, n),
            "router": (1, n, 2),
        }

    @property
    def window_s(self) -> int:
        return self.step_s * self.history

    def scale_array(self) -> np.ndarray:
        """``[len(horizons_s), len(targets)]`` float64: the forecast output times this is the
        change in °C / %RH. Accepts both card forms (one number per target, or one per horizon)."""
        k = len(self.horizons_s)
        cols = []
        for tgt in self.targets:
            v = self.target_scale.get(tgt)
            if isinstance(v, (list, tuple)):
                cols.append([float(x) for x in v])
            else:
                cols.append([float(v)] * k)  # type: ignore[arg-type]
        return np.array(cols, dtype=np.float64).T.reshape(k, len(self.targets))

    def forecast_change(self, out: np.ndarray) -> np.ndarray:
        """The ``forecast`` output -> change in target scales (times ``scale_array()``: °C, %RH).
        The runtime applies it; nothing downstream sees the companded values."""
        a = np.asarray(out, dtype=np.float32)
        c = self.forecast_compand
        if not c:
            return a
        return (c["knee"] * np.sinh(a.astype(np.float64) / c["gain"])).astype(np.float32)

    def judged_spacing_s(self, step_s: float | None = None) -> float:
        """The widest median spacing of a board's reads at which the fault head's verdict on it
        means something (gateway.reasoner._judgeable): ``max_read_interval_s`` and half a step
        (a sleeping board wakes a little late), at least SPARSE_STEPS steps. ``step_s`` is the
        grid's step where the gateway runs the clock faster (``--time-scale``); the card's
        seconds scale with it."""
        step = float(self.step_s if step_s is None else step_s)
        limit = SPARSE_STEPS * step
        if self.max_read_interval_s is not None:
            gap = self.max_read_interval_s * step / self.step_s
            limit = max(limit, gap + 0.5 * step)
        return limit

    def fault_decision(self, probs: np.ndarray) -> np.ndarray:
        """Class index per node from the ``fault`` output's probabilities ``[..., classes]``:
        the card's rule (see ``fault_threshold``). The gateway and evaluate both decide here."""
        p = np.asarray(probs, dtype=np.float64)
        if self.fault_threshold is None:
            return p.argmax(-1)
        ok = self.fault_classes.index("ok")
        faults = p.copy()
        faults[..., ok] = -np.inf
        return np.where(1.0 - p[..., ok] > self.fault_threshold, faults.argmax(-1), ok)

    def insight_decision(self, probs: np.ndarray) -> np.ndarray:
        """Yes/no per insight from the ``insight`` output's probabilities ``[..., insights]``:
        the card's rule (see ``insight_threshold``). The gateway and evaluate both decide here."""
        p = np.asarray(probs, dtype=np.float64)
        thr = self.insight_threshold or {}
        return p >= np.array([float(thr.get(name, 0.5)) for name in self.insights])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = {k: list(v) for k, v in self.input_shapes.items()}
        d["outputs"] = {k: list(v) for k, v in self.output_shapes.items()}
        return d

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "card") -> ModelCard:
        if not isinstance(d, dict):
            raise ModelError(f"{where}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("inputs", "outputs"):
                continue
            if k not in known:
                kw.setdefault("extra", {})[k] = v
                continue
            kw[k] = tuple(v) if isinstance(v, list) else v
        try:
            card = cls(**kw)
        except TypeError as e:
            raise ModelError(f"{where}: {e}") from None
        card.validate(where)
        return card

    def validate(self, where: str = "card") -> None:
        def bad(key: str, what: str) -> ModelError:
            return ModelError(f"{where}: {key} {what}; retrain or fix the card")

        if not (isinstance(self.nodes, int) and 1 <= self.nodes <= 1024):
            raise bad("nodes", f"must be an integer 1..1024, got {self.nodes!r}")
        if not (isinstance(self.step_s, int) and self.step_s > 0):
            raise bad("step_s", f"must be a positive integer, got {self.step_s!r}")
        if not (isinstance(self.history, int) and self.history >= 2):
            raise bad("history", f"must be an integer >= 2, got {self.history!r}")
        unknown = [f for f in self.features if f not in KNOWN_FEATURES]
        if unknown:
            raise bad("features", f"has unknown names {unknown} (known: {list(KNOWN_FEATURES)})")
        for f in ("t", "rh", "dt", "drh"):
            if f in self.features:
                n = self.normalization.get(f)
                if not n or not float(n.get("scale", 0)) > 0:
                    raise bad(f"normalization.{f}", "needs a positive scale")
        if not self.horizons_s or any(int(h) <= 0 for h in self.horizons_s):
            raise bad("horizons_s", f"must be positive seconds, got {list(self.horizons_s)}")
        clip = self.input_clip
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0
        ):
            raise bad("input_clip", f"must be null or a positive number, got {clip!r}")
        thr = self.fault_threshold
        if thr is not None:
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr < 1:
                raise bad("fault_threshold", f"must be null or a number in [0, 1), got {thr!r}")
            if "ok" not in self.fault_classes:
                raise bad("fault_threshold", "needs an 'ok' class in fault_classes")
        ithr = self.insight_threshold
        if ithr is not None:
            if not isinstance(ithr, dict):
                raise bad("insight_threshold", f"must be null or an object, got {ithr!r}")
            for name, v in ithr.items():
                if name not in self.insights:
                    raise bad(
                        f"insight_threshold.{name}",
                        f"names no insight of this model (insights: {list(self.insights)})",
                    )
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                    raise bad(f"insight_threshold.{name}", f"must be a number in (0, 1), got {v!r}")
        comp = self.forecast_compand
        if comp is not None:
            if not isinstance(comp, dict) or set(comp) != {"knee", "gain"}:
                raise bad(
                    "forecast_compand", f"must be null or {{'knee': k, 'gain': g}}, got {comp!r}"
                )
            for key, v in comp.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise bad(f"forecast_compand.{key}", f"must be a positive number, got {v!r}")
        gap = self.max_read_interval_s
        if gap is not None and (
            isinstance(gap, bool) or not isinstance(gap, (int, float)) or not gap > 0
        ):
            raise bad("max_read_interval_s", f"must be null or positive seconds, got {gap!r}")
        for tgt in self.targets:
            v = self.target_scale.get(tgt) if isinstance(self.target_scale, dict) else None
            values = list(v) if isinstance(v, (list, tuple)) else [v]
            if isinstance(v, (list, tuple)) and len(values) != len(self.horizons_s):
                raise bad(
                    f"target_scale.{tgt}",
                    f"has {len(values)} scales for {len(self.horizons_s)} horizons "
                    f"{list(self.horizons_s)}; give one number or one per horizon",
                )
            ok = all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in values
            )
            if not ok:
                raise bad(
                    f"target_scale.{tgt}",
                    f"needs a positive number or a list of them (one per horizon), got {v!r}",
                )


def card_path(model_path: Path | str) -> Path:
    """``models/humigraph-int8.tflite`` -> ``models/humigraph-int8.json``."""
    return Path(model_path).with_suffix(".json")


# in target scales: persistence misses Room-Climate and UCI's office by 0.06-0.13 of one at +5
# minutes, the simulated rooms by 0.4-0.6
FORECAST_KNEE = 0.2


def forecast_compand(clip: float, knee: float = FORECAST_KNEE) -> dict[str, float]:
    """The companding that maps ±clip (the model's soft-clipped output range) onto itself. An
    output step near 0 stands for knee / gain of the change it would uncompanded (0.3 for clip
    2), sqrt(knee² + y²) / gain of it at y (1.5 at y = 1, 3 at the clip)."""
    return {"knee": knee, "gain": round(clip / float(np.arcsinh(clip / knee)), 6)}


def load_card(model_path: Path | str) -> ModelCard:
    """The card beside a model file; a clear error when it is missing or invalid."""
    path = card_path(model_path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{path}: model card missing; every .tflite needs its card beside it "
            f"(written by humigraph quantize)"
        ) from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the model card: {e}") from None
    return ModelCard.from_json(d, where=str(path))


def fp32_path_for(out: Path) -> Path:
    """``humigraph-int8.tflite`` -> ``humigraph-fp32.tflite``; any other name gets ``-fp32``."""
    out = Path(out)
    if "int8" in out.stem:
        return out.with_name(out.stem.replace("int8", "fp32") + out.suffix)
    return out.with_name(out.stem + "-fp32" + out.suffix)
