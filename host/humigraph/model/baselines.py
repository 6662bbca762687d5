"""Baselines the reasoning model must beat, computed from the same windows it sees.

Forecast: *persistence* (no change), *linear* (least-squares trend of the node's last 10 minutes,
extrapolated), *ridge* (ridge regression on the node's last 5 minutes, fitted on training
windows). Insights: gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) on the
site's temperature and humidity slopes. Forecasts are returned in the model's units: change from
the node's last value divided by ``card.scale_array()`` (``[W, nodes, K, 2]``).

Run ``python -m humigraph.model.baselines --data SPEC`` for a held-out report; ``--pool SPEC...``
fits the baselines on other sources' training windows too, each source weighing alike as in
``humigraph train``, to show what sharing one model across sources costs a baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import HumigraphError
from .card import ModelCard
from .data_types import Windows
from .features import denormalize, unclip

__all__ = [
    "FittedBaselines",
    "baseline_report",
    "fit_baselines",
    "forecast_baselines",
    "grid_values",
    "insight_features",
    "linear_trend",
    "persistence",
]

LINEAR_SPAN_S = 600  # the trend's fitting span
RIDGE_SPAN_S = 300  # the ridge's input: the last 5 minutes
SLOPE_SPANS_S = (300, 900, 1800)  # the GBT's slopes


def grid_values(w: Windows, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """Absolute ``(t, rh)`` grids ``[W, nodes, history]`` decoded from the encoded ``x``."""
    f = list(card.features)
    t = denormalize("t", unclip(w.x[..., f.index("t")], card), card)
    rh = denormalize("rh", unclip(w.x[..., f.index("rh")], card), card)
    return t.astype(np.float64), rh.astype(np.float64)


def _steps(span_s: float, card: ModelCard) -> int:
    return int(min(card.history, max(2, round(span_s / card.step_s) + 1)))


def persistence(w: Windows, card: ModelCard) -> np.ndarray:
    """No change: the last value is the forecast."""
    return np.zeros(w.y_forecast.shape, np.float32)


def _slope(a: np.ndarray, n: int) -> np.ndarray:
    """Least-squares slope per step over the last ``n`` steps of ``[..., history]``."""
    y = a[..., -n:]
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return (y * x).sum(-1) / (x * x).sum()


def linear_trend(w: Windows, card: ModelCard, span_s: float = LINEAR_SPAN_S) -> np.ndarray:
    """The node's trend over the last ``span_s`` seconds, extrapolated to each horizon."""
    t, rh = grid_values(w, card)
    n = _steps(span_s, card)
    steps = np.array(card.horizons_s, dtype=np.float64) / card.step_s
    out = np.zeros(w.y_forecast.shape, np.float32)
    scales = card.scale_array()  # [K, 2]
    for j, a in enumerate((t, rh)):
        # the trend line's value at the last step is not the last value: extrapolate from it
        s = _slope(a, n)
        level = a[..., -n:].mean(-1) + s * (n - 1) / 2.0 - a[..., -1]
        out[..., j] = ((level[..., None] + s[..., None] * steps) / scales[:, j]).astype(np.float32)
    return out * w.node_mask[:, :, None, None]


def _ridge_features(w: Windows, card: ModelCard) -> np.ndarray:
    """Per node-window: the last 5 minutes relative to the last value, the level, the presence."""
    t, rh = grid_values(w, card)
    n = _steps(RIDGE_SPAN_S, card)
    f = list(card.features)
    present = w.x[..., -n:, f.index("present")] if "present" in f else np.ones(t.shape)[..., -n:]
    # inputs in the widest horizon's units; the ridge is linear, any fixed scale fits the same
    widest = card.scale_array().max(axis=0)
    rel_t = (t[..., -n:-1] - t[..., -1:]) / widest[0]
    rel_rh = (rh[..., -n:-1] - rh[..., -1:]) / widest[1]
    norm = card.normalization
    level = np.stack(
        [
            (t[..., -1] - norm["t"]["center"]) / norm["t"]["scale"],
            (rh[..., -1] - norm["rh"]["center"]) / norm["rh"]["scale"],
        ],
        -1,
    )
    return np.concatenate([rel_t, rel_rh, level, present], -1)


def insight_features(w: Windows, card: ModelCard) -> np.ndarray:
    """Per window: mean, min and max over the site's nodes of the t and rh slopes (per minute)
    over the last 5, 15 and 30 minutes, and the spread of the nodes' humidity."""
    t, rh = grid_values(w, card)
    m = w.node_mask > 0
    cols = []
    per_min = 60.0 / card.step_s
    for span in SLOPE_SPANS_S:
        n = _steps(span, card)
        for a in (t, rh):
            s = np.where(m, _slope(a, n) * per_min, np.nan)
            cols += [_nan_stat(np.nanmean, s), _nan_stat(np.nanmin, s), _nan_stat(np.nanmax, s)]
    cols.append(_nan_stat(np.nanstd, np.where(m, rh[..., -1], np.nan)))
    return np.stack(cols, -1)


def _nan_stat(fn: Any, a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a window with no node: 'mean of empty slice'
        warnings.simplefilter("ignore", RuntimeWarning)
        out = fn(a, axis=-1)
    return np.nan_to_num(out, nan=0.0)


@dataclass
class FittedBaselines:
    ridge: dict[tuple[int, int], Any] = field(default_factory=dict)  # (horizon k, target j)
    gbt: dict[int, Any] = field(default_factory=dict)  # insight index -> classifier


def healthy(w: Windows) -> np.ndarray:
    """``[W, nodes]``: real nodes not labelled faulty at the window's end (unlabelled counts)."""
    return (w.node_mask > 0) & ~((w.y_fault_mask > 0) & (w.y_fault != 0))


def _alike(sizes: Sequence[int]) -> np.ndarray | None:
    """Sample weights under which each part weighs alike in total (mean 1); None for one part."""
    if len(sizes) < 2:
        return None
    total, used = sum(sizes), sum(1 for n in sizes if n)
    return np.concatenate([np.full(n, total / (used * n)) for n in sizes if n])


def fit_baselines(
    train: Windows, card: ModelCard, *, seed: int = 0, pooled: Sequence[Windows] = ()
) -> FittedBaselines:
    """Fits the ridge forecasts and the GBT insight classifiers on training windows.

    ``pooled``: other sources' training windows to fit on as well. As in training the model
    (``train.SourceBalance``), each source weighs alike, and each source's forecast targets are
    divided by its own mean absolute change, so a slow room is not a rounding error beside a
    fast one; the ridge's forecasts come back in ``train``'s scale."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import Ridge

    fitted = FittedBaselines()
    parts = [train, *pooled]
    feats = [_ridge_features(w, card) for w in parts]
    # a stuck or spiking sensor's targets would teach the ridge noise
    alive = [healthy(w) for w in parts]
    for k in range(len(card.horizons_s)):
        rows = [a & (w.y_forecast_mask[..., k] > 0) for a, w in zip(alive, parts, strict=True)]
        if rows[0].sum() < 10:
            continue
        weight = _alike([int(r.sum()) for r in rows])
        for j in range(2):
            ys = [w.y_forecast[..., k, j][r] for w, r in zip(parts, rows, strict=True)]
            if weight is None:
                fitted.ridge[(k, j)] = Ridge(alpha=1.0).fit(feats[0][rows[0]], ys[0])
                continue
            scale = [max(float(np.abs(y).mean()), 1e-6) if len(y) else 1.0 for y in ys]
            model = Ridge(alpha=1.0).fit(
                np.concatenate([f[r] for f, r in zip(feats, rows, strict=True)]),
                np.concatenate([y / s for y, s in zip(ys, scale, strict=True)]),
                sample_weight=weight,
            )
            fitted.ridge[(k, j)] = _Rescaled(model, scale[0])
    xs = [insight_features(w, card) for w in parts]
    for i in range(len(card.insights)):
        rows = [w.y_insight_mask[:, i] > 0 for w in parts]
        y = train.y_insight[rows[0], i]
        if rows[0].sum() < 10 or len(np.unique(y)) < 2:
            continue
        clf = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        fitted.gbt[i] = clf.fit(
            np.concatenate([x[r] for x, r in zip(xs, rows, strict=True)]),
            np.concatenate([w.y_insight[r, i] for w, r in zip(parts, rows, strict=True)]).astype(
                int
            ),
            sample_weight=_alike([int(r.sum()) for r in rows]),
        )
    return fitted


@dataclass
class _Rescaled:
    """A ridge fitted on targets in units of one source's typical change, predicting in the
    card's units again."""

    model: Any
    scale: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x) * self.scale


def forecast_baselines(
    w: Windows, card: ModelCard, fitted: FittedBaselines | None = None
) -> dict[str, np.ndarray]:
    """``{"persistence", "linear"[, "ridge"]}`` -> ``[W, nodes, K, 2]`` normalized changes."""
    out = {"persistence": persistence(w, card), "linear": linear_trend(w, card)}
    if fitted is not None and fitted.ridge:
        feats = _ridge_features(w, card)
        pred = np.full(w.y_forecast.shape, np.nan, np.float32)
        for (k, j), model in fitted.ridge.items():
            pred[..., k, j] = model.predict(feats.reshape(-1, feats.shape[-1])).reshape(
                feats.shape[:2]
            )
        out["ridge"] = pred
    return out


def insight_baseline(w: Windows, card: ModelCard, fitted: FittedBaselines) -> np.ndarray:
    """GBT probabilities ``[W, len(insights)]``; NaN for an insight without a fitted model."""
    x = insight_features(w, card)
    out = np.full((len(w), len(card.insights)), np.nan)
    for i, clf in fitted.gbt.items():
        out[:, i] = clf.predict_proba(x)[:, 1]
    return out


def _mae(pred: np.ndarray, w: Windows, card: ModelCard, k: int, j: int) -> float | None:
    m = (w.y_forecast_mask[..., k] > 0) & healthy(w) & np.isfinite(pred[..., k, j])
    if not m.any():
        return None
    scale = float(card.scale_array()[k, j])
    return float(np.abs(pred[..., k, j][m] - w.y_forecast[..., k, j][m]).mean() * scale)


def baseline_report(
    train: Windows,
    test: Windows,
    card: ModelCard,
    *,
    seed: int = 0,
    pooled: Sequence[Windows] = (),
) -> dict[str, Any]:
    """Held-out MAE of every forecast baseline and the GBT insight scores, as JSON data
    (``pooled``: see :func:`fit_baselines`)."""
    from .evaluate import _round, binary_scores, roc_auc

    fitted = fit_baselines(train, card, seed=seed, pooled=pooled)
    preds = forecast_baselines(test, card, fitted)
    forecast: dict[str, Any] = {}
    for k, h in enumerate(card.horizons_s):
        forecast[str(h)] = {
            name: {b: _mae(p, test, card, k, j) for b, p in preds.items()}
            for j, name in enumerate(card.targets)
        }
        forecast[str(h)]["n"] = int(((test.y_forecast_mask[..., k] > 0) & healthy(test)).sum())
    probs = insight_baseline(test, card, fitted)
    insights: dict[str, Any] = {}
    for i, name in enumerate(card.insights):
        rows = (test.y_insight_mask[:, i] > 0) & np.isfinite(probs[:, i])
        if not rows.any():
            insights[name] = None
            continue
        y = test.y_insight[rows, i]
        insights[name] = {
            **binary_scores(y, probs[rows, i] >= 0.5),
            "auc": _round(roc_auc(y, probs[rows, i])),
        }
    return {
        "windows": {"train": len(train), "test": len(test)},
        "forecast": forecast,
        "gbt": insights,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m humigraph.model.baselines --data SPEC [--pool SPEC...] [--holdout 0.2]
    [--seed 0]``."""
    ap = argparse.ArgumentParser(prog="python -m humigraph.model.baselines")
    ap.add_argument("--data", required=True, help="a data SPEC (room-climate:DIR, world:SEED, ...)")
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stride", type=int, default=1, help="window stride in steps")
    ap.add_argument(
        "--pool",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="fit on these SPECs' training recordings too, each source weighing alike (as "
        "humigraph train does); the report stays on --data's held-out recordings",
    )
    ap.add_argument(
        "--pool-stride",
        type=int,
        default=5,
        help="window stride of the --pool SPECs (5: a simulated day gives 1440 windows at 1)",
    )
    args = ap.parse_args(argv)
    try:
        rep = _report(args)
    except HumigraphError as e:  # one line, as the humigraph command gives it
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    json.dump(rep, sys.stdout, indent=1)
    print()
    return 0


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from .data import load, make_windows, split

    card = ModelCard()
    train_recs, test_recs = split(load(args.data), holdout=args.holdout, seed=args.seed)
    train = make_windows(train_recs, card, stride_steps=args.stride)
    test = make_windows(test_recs, card, stride_steps=args.stride)
    pooled = [
        make_windows(
            split(load(spec), holdout=args.holdout, seed=args.seed)[0],
            card,
            stride_steps=args.pool_stride,
        )
        for spec in args.pool
    ]
    rep = baseline_report(train, test, card, seed=args.seed, pooled=pooled)
    rep["data"] = args.data
    rep["pooled_with"] = args.pool
    rep["recordings"] = {"train": len(train_recs), "test": sorted(r.name for r in test_recs)}
    return rep


if __name__ == "__main__":
    raise SystemExit(main())
