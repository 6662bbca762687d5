"""Task metrics, INT8-vs-float parity, the Markdown model card and its plots (numpy + matplotlib).

Everything here runs the *converted* models through :class:`humigraph.runtime.Runtime`, so the
numbers are those of the files the gateway loads, not of the TensorFlow graph.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import Runtime
from .card import ModelCard
from .data_types import Recording, Windows
from .features import denormalize, unclip

__all__ = [
    "fixed_inputs",
    "parity",
    "run_model",
    "task_metrics",
    "write_markdown",
    "write_plots",
]

log = logging.getLogger(__name__)


def run_model(
    rt: Runtime, w: Windows, progress: Callable[[Any], Any] | None = None
) -> dict[str, np.ndarray]:
    """Every window through the runtime; outputs stacked on the window axis (no batch axis)."""
    rows: dict[str, list[np.ndarray]] = {}
    it: Any = range(len(w))
    if progress is not None:
        it = progress(it)
    for i in it:
        out = rt.run(x=w.x[i : i + 1], node_mask=w.node_mask[i : i + 1])
        for k, v in out.items():
            rows.setdefault(k, []).append(v[0])
    return {k: np.stack(v) for k, v in rows.items()}


# ---------------------------------------------------------------------------------- metrics


def _f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _binary(y: np.ndarray, pred: np.ndarray) -> dict[str, float] | None:
    if len(y) == 0:
        return None
    y, pred = y.astype(bool), pred.astype(bool)
    tp, tn = float(np.sum(y & pred)), float(np.sum(~y & ~pred))
    fp, fn = float(np.sum(~y & pred)), float(np.sum(y & ~pred))
    tpr = tp / (tp + fn) if tp + fn else np.nan
    tnr = tn / (tn + fp) if tn + fp else np.nan
    ba = float(np.nanmean([tpr, tnr])) if np.isfinite([tpr, tnr]).any() else None
    _, _, f1 = _f1(tp, fp, fn)
    return {
        "accuracy": round((tp + tn) / len(y), 4),
        "balanced_accuracy": None if ba is None else round(ba, 4),
        "f1": round(f1, 4),
        "base_rate": round(float(y.mean()), 4),
        "n": len(y),
    }


def linear_trend(w: Windows, card: ModelCard, minutes: int = 5) -> np.ndarray:
    """The linear-trend baseline's normalized change ``[W, nodes, K, 2]``: the slope of the last
    ``minutes`` steps, extrapolated to each horizon."""
    k = max(1, round(minutes * 60 / card.step_s))
    out = np.zeros((len(w), card.nodes, len(card.horizons_s), 2), np.float32)
    scales = card.scale_array()  # [K, 2]
    for j, feat in enumerate(("dt", "drh")):
        if feat not in card.features:
            continue
        col = card.features.index(feat)
        # dt at the last step is 0, so the change over k steps is -dt[-1-k] (in °C / %RH)
        change = -denormalize(feat, unclip(w.x[:, :, -1 - k, col], card), card)
        for hi, h in enumerate(card.horizons_s):
            out[:, :, hi, j] = change * (h / (k * card.step_s)) / scales[hi, j]
    return out


def forecast_metrics(w: Windows, fc: np.ndarray, card: ModelCard) -> dict[str, Any]:
    """MAE in °C / %RH per horizon next to persistence and the linear-trend baseline."""
    lin = linear_trend(w, card)
    res: dict[str, Any] = {}
    scales = card.scale_array()
    for hi, h in enumerate(card.horizons_s):
        m = w.y_forecast_mask[:, :, hi] > 0
        row: dict[str, Any] = {}
        for j, tgt in enumerate(("t", "rh")):
            s = scales[hi, j]
            y = w.y_forecast[:, :, hi, j][m] * s
            if not len(y):
                row[tgt] = None
                continue
            row[tgt] = {
                "mae": round(float(np.mean(np.abs(fc[:, :, hi, j][m] * s - y))), 5),
                "persistence": round(float(np.mean(np.abs(y))), 5),
                "linear": round(float(np.mean(np.abs(lin[:, :, hi, j][m] * s - y))), 5),
                "n": int(m.sum()),
            }
        res[str(h)] = row
    return res


def fault_metrics(w: Windows, prob: np.ndarray, card: ModelCard) -> dict[str, Any]:
    m = w.y_fault_mask > 0
    if not m.any():
        return {"macro_f1": None, "per_class": {}, "false_alarms_per_node_day": None}
    y, pred = w.y_fault[m], card.fault_decision(prob[m])
    per: dict[str, Any] = {}
    f1s = []
    for c, name in enumerate(card.fault_classes):
        if not np.any(y == c) and not np.any(pred == c):
            continue
        p, r, f = _f1(
            float(np.sum((pred == c) & (y == c))),
            float(np.sum((pred == c) & (y != c))),
            float(np.sum((pred != c) & (y == c))),
        )
        per[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
                     "support": int(np.sum(y == c))}  # fmt: skip
        f1s.append(f)
    clean = y == 0
    # one verdict per node and step at the gateway: the share of clean node-steps flagged, per day
    fa = float(np.mean(pred[clean] != 0)) * 86400 / card.step_s if clean.any() else None
    n = len(card.fault_classes)
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, pred), 1)
    return {
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per,
        "false_alarms_per_node_day": None if fa is None else round(fa, 3),
        "confusion": cm.tolist(),
    }


def adjacency_auc(w: Windows, adj: np.ndarray, recs: Sequence[Recording]) -> float | None:
    """How well the learned adjacency, averaged per recording, ranks the true coupled pairs."""
    from sklearn.metrics import roc_auc_score

    ys, ss = [], []
    for ri in np.unique(w.rec):
        rec = recs[int(ri)]
        if rec.adjacency is None:
            continue
        n = len(rec.nodes)
        learned = adj[w.rec == ri][:, :n, :n].mean(axis=0)
        truth = np.asarray(rec.adjacency)[:n, :n]
        off = ~np.eye(n, dtype=bool)
        ys.append(truth[off] > 0)
        ss.append(learned[off])
    if not ys:
        return None
    y, s = np.concatenate(ys), np.concatenate(ss)
    if y.all() or not y.any():
        return None
    return round(float(roc_auc_score(y, s)), 4)


def task_metrics(
    w: Windows, out: dict[str, np.ndarray], card: ModelCard, recs: Sequence[Recording]
) -> dict[str, Any]:
    """The ``humigraph evaluate --json`` keys for one model's outputs on windows ``w``."""
    res: dict[str, Any] = {
        "windows": len(w),
        "forecast": forecast_metrics(w, out["forecast"], card),
        "faults": fault_metrics(w, out["fault"], card),
    }
    for k, name in enumerate(card.insights):
        m = w.y_insight_mask[:, k] > 0
        res[name] = _binary(w.y_insight[m, k], card.insight_decision(out["insight"][m])[:, k])
    res["adjacency_auc"] = adjacency_auc(w, out["adjacency"], recs)
    return res


# ----------------------------------------------------------------------------------- parity


def fixed_inputs(card: ModelCard, n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small fixed input set, ``(x [n, nodes, history, F], node_mask [n, nodes])``: synthetic
    sites (numpy only, no data files) with daily swings, shared trends, noise, a stuck and a
    spiking sensor, encoded by :func:`features.encode`. The card records the INT8-vs-float error
    on it, and the tests check the committed models still reproduce that error."""
    from .features import encode

    rng = np.random.default_rng(seed)
    h = card.history
    xs, ms = [], []
    for i in range(n):
        k = int(rng.integers(1, min(card.nodes, 12) + 1))
        steps = np.arange(h, dtype=np.float64)
        shared = np.cumsum(rng.normal(0, 0.03, h)) + 0.3 * np.sin(
            steps / h * np.pi * rng.uniform(0.5, 2)
        )
        t = 18 + 8 * rng.random((k, 1)) + shared + np.cumsum(rng.normal(0, 0.02, (k, h)), axis=1)
        rh = (
            30
            + 40 * rng.random((k, 1))
            - 2 * shared
            + np.cumsum(rng.normal(0, 0.2, (k, h)), axis=1)
        )
        t, rh = np.round(t, 1), np.round(rh, 1)
        present = (rng.random((k, h)) > 0.05).astype(np.float64)
        fail = 1.0 - present
        if k > 1 and i % 3 == 0:
            t[0, h // 2 :] = t[0, h // 2]  # stuck
        if k > 2 and i % 3 == 1:
            t[1, rng.integers(0, h, 3)] += 10.0  # spikes
        t[present == 0] = np.nan
        rh[present == 0] = np.nan
        enc = encode(t, rh, present, fail, card)
        xs.append(enc.x)
        ms.append(enc.mask)
    return np.stack(xs).astype(np.float32), np.stack(ms).astype(np.float32)


def fixed_parity(rt_q: Runtime, rt_f: Runtime, card: ModelCard) -> dict[str, Any]:
    """Per-output MAE and max error of INT8 against float on :func:`fixed_inputs`."""
    x, m = fixed_inputs(card)
    w = Windows(
        x=x, node_mask=m, y_forecast=np.zeros(0), y_forecast_mask=np.zeros(0),
        y_fault=np.zeros(0), y_fault_mask=np.zeros(0), y_insight=np.zeros(0),
        y_insight_mask=np.zeros(0), last=np.zeros(0), rec=np.zeros(0), end_ts=np.zeros(0),
    )  # fmt: skip
    return {"inputs": "report.fixed_inputs(card, n=16, seed=0)",
            "outputs": parity(w, run_model(rt_q, w), run_model(rt_f, w))}  # fmt: skip


def parity(
    w: Windows, q: dict[str, np.ndarray], f: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output: MAE, max abs error and SNR (dB) of INT8 against float, real node slots only."""
    mask = w.node_mask > 0
    res = {}
    for name in f:
        a, b = f[name], q[name]
        if name in ("forecast", "fault", "router"):
            a, b = a[mask], b[mask]
        elif name == "adjacency":
            a, b = a[mask], b[mask]  # rows of real nodes
        err = (b - a).astype(np.float64)
        p_sig, p_err = float(np.mean(a.astype(np.float64) ** 2)), float(np.mean(err**2))
        snr = 10 * np.log10(p_sig / p_err) if p_err > 0 else float("inf")
        res[name] = {
            "mae": round(float(np.mean(np.abs(err))), 6),
            "max": round(float(np.max(np.abs(err))), 6),
            "snr_db": round(float(snr), 2) if np.isfinite(snr) else None,
        }
    return res


# ------------------------------------------------------------------------------------ plots


def write_plots(
    stem: Path,
    w: Windows,
    out_q: dict[str, np.ndarray],
    out_f: dict[str, np.ndarray],
    recs: Sequence[Recording],
    card: ModelCard,
    metrics_q: dict[str, Any],
    router_case: dict[str, Any] | None = None,
    forecast_case: tuple[Windows, dict[str, np.ndarray], dict[str, np.ndarray], str] | None = None,
) -> dict[str, str]:
    """PNG files beside the model (``<stem>-adjacency.png`` ...); returns ``{kind: file name}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}

    # 1. learned adjacency (mean over a recording's windows) next to the true coupling
    with_truth = [int(r) for r in np.unique(w.rec) if recs[int(r)].adjacency is not None]
    ri = with_truth[0] if with_truth else int(w.rec[0])
    rec = recs[ri]
    n = len(rec.nodes)
    learned = out_q["adjacency"][w.rec == ri][:, :n, :n].mean(axis=0)
    panels = [("learned (INT8, mean over windows)", learned)]
    if rec.adjacency is not None:
        panels.append(("true coupling (world simulator)", np.asarray(rec.adjacency)[:n, :n]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6))
    axes = np.atleast_1d(axes)
    for ax, (title, a) in zip(axes, panels, strict=True):
        im = ax.imshow(a, cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(n), rec.nodes, rotation=90, fontsize=6)
        ax.set_yticks(range(n), rec.nodes, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"adjacency, {rec.name}: row i = how much node i listens to node j", fontsize=10)
    fig.tight_layout()
    files["adjacency"] = _save(fig, stem, "adjacency")

    # 2. forecast against actual, +15 min, one node of a clean held-out recording
    if forecast_case is not None:
        fw, fq, ff, title = forecast_case
        hi = min(1, len(card.horizons_s) - 1)
        h = card.horizons_s[hi]
        node = 0
        fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
        for j, unit in enumerate(("°C", "%RH")):
            s = card.scale_array()[hi, j]
            tt = (fw.end_ts + h - fw.end_ts[0]) / 60
            m = fw.y_forecast_mask[:, node, hi] > 0
            base = fw.last[:, node, j]
            ax = axes[j]
            ax.plot(tt[m], (base + fw.y_forecast[:, node, hi, j] * s)[m], "k-", lw=1.4,
                    label="actual")  # fmt: skip
            ax.plot(tt, base + ff["forecast"][:, node, hi, j] * s, "-", lw=1, label="float32")
            ax.plot(tt, base + fq["forecast"][:, node, hi, j] * s, "--", lw=1, label="INT8")
            ax.plot(tt, base, ":", lw=1, label="persistence (last value)")
            ax.set_ylabel(unit)
            ax.legend(fontsize=7, loc="best")
        axes[-1].set_xlabel("minutes (time the forecast is for)")
        fig.suptitle(f"+{h // 60} min forecast, {title}", fontsize=10)
        fig.tight_layout()
        files["forecast"] = _save(fig, stem, "forecast")

    # 3. fault confusion matrix (INT8)
    cm = np.asarray(metrics_q["faults"].get("confusion") or np.zeros((1, 1)))
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = list(card.fault_classes)[: cm.shape[0]]
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for (a, b), v in np.ndenumerate(cm):
        ax.text(b, a, str(v), ha="center", va="center", fontsize=7,
                color="white" if norm[a, b] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("fault class confusion (INT8, node-windows)", fontsize=10)
    fig.tight_layout()
    files["confusion"] = _save(fig, stem, "confusion")

    # 4. router weights under an injected fault
    if router_case is not None:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        tm = router_case["minutes"]
        axes[0].plot(tm, router_case["reading"], "r-", lw=1, label="faulted sensor reading")
        axes[0].plot(tm, router_case["truth"], "k-", lw=1, label="true air")
        axes[0].set_ylabel("°C")
        axes[0].legend(fontsize=7)
        axes[1].plot(tm, router_case["router_faulted"], "r-", lw=1.2, label="faulted node")
        axes[1].plot(tm, router_case["router_others"], "b-", lw=1, label="other nodes (mean)")
        axes[1].set_ylabel("router weight on neighbours")
        axes[1].set_ylim(0, 1)
        axes[1].set_xlabel("minutes")
        axes[1].legend(fontsize=7)
        for ax in axes:
            ax.axvspan(router_case["fault_start"], router_case["fault_end"], color="orange",
                       alpha=0.15)  # fmt: skip
        fig.suptitle(router_case["title"], fontsize=10)
        fig.tight_layout()
        files["router"] = _save(fig, stem, "router")
    plt.close("all")
    return files


def _save(fig: Any, stem: Path, kind: str) -> str:
    path = stem.with_name(f"{stem.name}-{kind}.png")
    fig.savefig(path, dpi=90)
    return path.name


# --------------------------------------------------------------------------------- markdown


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}"
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
        else "n/a"
    )


def _evaluate_section(ev: dict[str, Any]) -> list[str]:
    """Held-out results of :func:`humigraph.model.evaluate.evaluate`, INT8 next to float32."""
    lines: list[str] = []
    for spec, row in ev.items():
        q, f = row.get("int8") or {}, row.get("fp32") or {}
        lines += [f"## Held out: {q.get('data', spec)}", "",
                  f"{q.get('windows')} clean windows, {q.get('recordings')} recording(s)"
                  + (f"; ridge and GBT {q['baselines_fitted_on']}."
                     if q.get("baselines_fitted_on") else "."), "",
                  "| horizon | target | INT8 MAE | float MAE | persistence | INT8 / persistence "
                  "| linear | ridge |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for h, entry in (q.get("forecast") or {}).items():
            for tgt in ("t", "rh"):
                e, ef = (
                    entry.get(tgt) or {},
                    ((f.get("forecast") or {}).get(h) or {}).get(tgt) or {},
                )
                lines.append(
                    f"| +{int(h) // 60} min | {tgt} | {_fmt(e.get('mae'))} | {_fmt(ef.get('mae'))} "
                    f"| {_fmt(e.get('persistence'))} | {_ratio(e.get('mae'), e.get('persistence'))} "
                    f"| {_fmt(e.get('linear'))} | {_fmt(e.get('ridge'))} |"
                )
        fq, ff = q.get("faults") or {}, f.get("faults") or {}
        lines += ["", f"Faults (injected, rate {fq.get('injected_rate')}): macro-F1 INT8 "
                  f"{_fmt(fq.get('macro_f1'))}, float {_fmt(ff.get('macro_f1'))}; false alarms per "
                  f"node-day on clean data INT8 {_fmt(fq.get('false_alarms_per_node_day'))}, float "
                  f"{_fmt(ff.get('false_alarms_per_node_day'))}."]  # fmt: skip
        aq, af = fq.get("argmax") or {}, ff.get("argmax") or {}
        if aq:
            lines.append(f"Rule: ok unless p(fault) > {fq.get('fault_threshold')}; with the most "
                         f"probable class instead: macro-F1 INT8 {_fmt(aq.get('macro_f1'))}, float "
                         f"{_fmt(af.get('macro_f1'))}; false alarms INT8 "
                         f"{_fmt(aq.get('false_alarms_per_node_day'))}, float "
                         f"{_fmt(af.get('false_alarms_per_node_day'))}.")  # fmt: skip
        lines += _sparse_lines(fq)
        for name in ("occupancy", "ventilation"):
            a, b = q.get(name), f.get(name)
            if not a:
                continue
            g = (a.get("baselines") or {}).get("gbt") or {}
            lines.append(
                f"{name}: balanced accuracy INT8 {_fmt(a.get('balanced_accuracy'))}, float "
                f"{_fmt((b or {}).get('balanced_accuracy'))}, GBT baseline "
                f"{_fmt(g.get('balanced_accuracy'))}; F1 {_fmt(a.get('f1'))}; base rate "
                f"{_fmt(a.get('base_rate'))}"
                + (
                    f"; decided at p >= {_fmt(a['threshold'])} (at 0.5: "
                    f"{_fmt(a['at_0_5'].get('balanced_accuracy'))})."
                    if a.get("at_0_5")
                    else "."
                )
            )
        if q.get("adjacency_auc") is not None:
            lines.append(f"Adjacency AUC against the true coupling: INT8 {_fmt(q['adjacency_auc'])}, "
                         f"float {_fmt(f.get('adjacency_auc'))}.")  # fmt: skip
        lines.append("")
    return lines


def _sparse_lines(fq: dict[str, Any]) -> list[str]:
    """evaluate's after_start and sparse_reads (healthy boards the gateway would judge, called
    faulty) as one sentence each."""
    lines = []
    for key, what, unit in (
        ("after_start", "A healthy board called faulty after it starts reading", "minutes"),
        ("sparse_reads", "A healthy board reading once per period called faulty", "period_s"),
    ):
        entry = fq.get(key) or {}
        xs = entry.get(unit)
        if not xs:
            continue
        label = "minutes after the start" if unit == "minutes" else "s between reads"
        rates = {
            variant: " / ".join(
                _fmt(r) for r in (entry.get(variant) or {}).get("false_fault_rate", [])
            )
            for variant in ("one_board", "whole_site")
        }
        lines.append(
            f"{what} ({' / '.join(str(x) for x in xs)} {label}), INT8: one board among boards "
            f"reading as usual {rates['one_board']}; every board {rates['whole_site']}."
        )
    steep = fq.get("steep_ok")
    if steep:
        lines.append(
            f"A healthy board whose window climbs or falls steeply (a shower, cooking), INT8: "
            f"called faulty in {_fmt(steep['false_fault_rate'])} of {steep['node_windows']} "
            f"node-windows (the other healthy boards {_fmt(steep['others_false_fault_rate'])})."
        )
    return lines


def write_markdown(path: Path, card: ModelCard, plots: dict[str, str]) -> None:
    """The human-readable model card (``humigraph-int8.md``) from the card's measured metrics."""
    m = card.metrics
    lines = [
        f"# Model card: {card.model_id}",
        "",
        "Site reasoning model of humigraph: adaptive graph over up to "
        f"{card.nodes} node slots, {card.history} steps of {card.step_s} s, "
        f"forecasts at {', '.join(f'+{h // 60} min' for h in card.horizons_s)}, "
        f"fault classes {', '.join(card.fault_classes)}, insights {', '.join(card.insights)}.",
        (
            f"Trained with boards reading as seldom as every {card.max_read_interval_s:g} s "
            "(deep sleep)"
            if card.max_read_interval_s
            else "Trained on boards reading every minute or more often"
        )
        + f": the gateway judges a board's health while its reads lie at most "
        f"{card.judged_spacing_s():g} s apart (median).",
        "All numbers below were measured by `humigraph quantize` when this file was written.",
        "",
        "## Files",
        "",
        "| file | bytes | median latency, 1 thread (ms) | XNNPACK partitions | ops left outside |",
        "|---|---|---|---|---|",
    ]
    for kind in ("int8", "fp32"):
        f = m.get("files", {}).get(kind, {})
        lat = m.get("latency", {}).get(kind, {})
        outside = lat.get("outside_delegate")
        left = "n/a" if outside is None else ", ".join(f"{k} x{v}" for k, v in outside.items())
        lines.append(
            f"| {f.get('name', '?')} | {f.get('bytes', '?')} | {_fmt(lat.get('median_ms'))} "
            f"| {lat.get('delegate_partitions', 'n/a')} | {left or 'none'} |"
        )
    runs = m.get("latency", {}).get("int8", {}).get("runs")
    if m.get("latency", {}).get("int8", {}).get("interleaved_with"):
        lines += [
            "",
            f"Latency: one site window, {runs} calls of each model interleaved (INT8, float32, "
            "float32, INT8, ...), so that load on the machine falls on both alike.",
        ]
    cpu = m.get("latency", {}).get("cpu")
    if cpu:
        from .latency import describe_cpu

        lines += [f"Timed on: {describe_cpu(cpu)}, {cpu.get('cpus')} CPUs."]
    ev = m.get("evaluation", {})
    lines += ["", f"Evaluation data: {ev.get('data', 'n/a')} ({ev.get('windows', 0)} windows).", ""]
    lines += _evaluate_section(m.get("evaluate") or {})
    lines += [
        "## Parity: INT8 against float32",
        "",
        "| output | MAE | max | SNR (dB) |",
        "|---|---|---|---|",
    ]
    for name, p in m.get("parity", {}).items():
        lines.append(f"| {name} | {_fmt(p['mae'])} | {_fmt(p['max'])} | {_fmt(p['snr_db'])} |")
    bc = ev.get("bias_correction")
    lines += [
        "",
        f"Biases corrected for the weights' rounding in {bc['layers']} layers (input means over "
        f"{bc['windows']} calibration windows; largest shift taken out: "
        f"{max((r['largest_shift_output_steps'] for r in bc['per_layer']), default=0):g} output "
        "steps)."
        if bc
        else "Biases as the converter wrote them (no bias correction).",
    ]
    for sym in ev.get("symmetric_operands") or []:
        lines.append(
            f"Zero point 0 for {sym['tensor']} (a BATCH_MATMUL operand, so that XNNPACK runs it): "
            f"step {sym['step_before']:g} -> {sym['step_after']:g}."
        )
    for kind in ("int8", "fp32"):
        t = m.get("task", {}).get(kind)
        if not t:
            continue
        lines += ["", f"## Task metrics on the parity windows ({kind}, faults injected)", "", "| horizon | target | MAE | persistence | linear trend |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for h, row in t["forecast"].items():
            for tgt, v in row.items():
                if v:
                    lines.append(f"| +{int(h) // 60} min | {tgt} | {_fmt(v['mae'])} | "
                                 f"{_fmt(v['persistence'])} | {_fmt(v['linear'])} |")  # fmt: skip
        fm = t["faults"]
        lines += ["", f"Fault macro-F1 {_fmt(fm.get('macro_f1'))}, false alarms per node-day on "
                  f"clean data {_fmt(fm.get('false_alarms_per_node_day'))}."]  # fmt: skip
        for name in card.insights:
            v = t.get(name)
            if v:
                lines.append(f"{name}: balanced accuracy {_fmt(v['balanced_accuracy'])}, F1 "
                             f"{_fmt(v['f1'])}, base rate {_fmt(v['base_rate'])} (n={v['n']}).")  # fmt: skip
        lines.append(f"Adjacency AUC against the true coupling: {_fmt(t.get('adjacency_auc'))}.")
    rc = m.get("router_fault")
    if rc:
        lines += ["", "## Router under an injected fault", "", rc.get("summary", "")]
    if plots:
        lines += ["", "## Plots", ""]
        for kind, name in plots.items():
            lines.append(f"![{kind}]({name})")
            lines.append("")
    ops = m.get("ops", {})
    if ops:
        lines += ["## Ops (INT8 model)", "", "| op | count | output type |", "|---|---|---|"]
        for op, v in sorted(ops.items()):
            lines.append(f"| {op} | {v['count']} | {v['dtype']} |")
    tr = card.training
    if tr:
        lines += ["", "## Training", "", "```json",
                  json.dumps({k: v for k, v in tr.items() if k != "history"}, indent=1, default=str),
                  "```"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
