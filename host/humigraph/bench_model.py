"""``humigraph bench model``: the INT8 model against its float32 twin, side by side.

Both models run one simulated site window (a world recording encoded as the gateway encodes it) on
one thread, their calls interleaved (INT8, float32, float32, INT8, ...) so that whatever else the
machine does falls on both alike. Several rounds show the spread; the goal of the model issue is
INT8 no slower than float32 and under 1 ms per window.

``--probe`` times, in the same interleaved calls, copies of the INT8 file with the SOFTMAX ops
that XNNPACK leaves to TFLite's own kernels swapped for LOGISTIC (``model.delegate_probe``; their
outputs are wrong): each op alone and all of them. The all-swapped copy's ratio is what XNNPACK's
int8 kernels give on this CPU with the whole graph delegated, so it splits INT8's time against
float between the graph and the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

DEFAULT_MODEL = Path("models/humigraph-int8.tflite")
# Float32's round medians further apart than this mean the machine changed speed during the run:
# a Zen 3 virtual machine ran at about 0.21 or 0.35-0.40 ms per call with nothing else running,
# and INT8/float came out 1.02x in the one state and 1.10x in the other (docs/BENCHMARKS.md).
UNSTEADY_SPREAD = 1.15


def _window(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """One site window of the world simulator, in the model's card's encoding."""
    from .model.card import load_card
    from .model.data import load, make_windows

    card = load_card(model)
    w = make_windows(load("world:1?days=1"), card, max_windows=1, seed=0)
    return w.x[:1], w.node_mask[:1]


def _probes(model: Path, into: Path) -> dict[str, Path]:
    """The probe copies of ``model`` written into ``into``: each SOFTMAX alone, then all."""
    from .model.delegate_probe import softmax_ops, swap_for_logistic

    buf = model.read_bytes()
    ops = softmax_ops(buf)
    sets = [[o] for o in ops] + ([ops] if len(ops) > 1 else [])
    out = {}
    for i, chosen in enumerate(sets):
        name = "all SOFTMAX" if len(chosen) > 1 else chosen[0].describe()
        path = into / f"probe{i}.tflite"
        path.write_bytes(swap_for_logistic(buf, chosen))
        out[name] = path
    return out


def run_model_bench(
    model: Path, float_model: Path, *, rounds: int = 5, runs: int = 1000, probe: bool = False
) -> dict[str, Any]:
    """``rounds`` rounds of :func:`humigraph.model.latency.latency_side_by_side`; with
    ``probe``, the probe copies (module docstring) run in the same interleaved calls."""
    from .model.latency import cpu_summary, latency_side_by_side

    for p in (model, float_model):
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such model file (make train quantize writes models/)")
    x, mask = _window(model)
    per_round = []
    probe_ratios: dict[str, list[float]] = {}
    probe_delegate: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="humigraph-probe-") as tmp:
        probes = _probes(Path(model), Path(tmp)) if probe else {}
        for _ in range(rounds):
            lat = latency_side_by_side(
                {"int8": model, "fp32": float_model, **probes}, x, mask, runs=runs
            )
            fp32 = lat["fp32"]["median_ms"]
            per_round.append(
                {
                    "int8_ms": lat["int8"]["median_ms"],
                    "fp32_ms": fp32,
                    "ratio": round(lat["int8"]["median_ms"] / fp32, 3),
                }
            )
            for name in probes:
                probe_ratios.setdefault(name, []).append(round(lat[name]["median_ms"] / fp32, 3))
                probe_delegate[name] = lat[name].get("outside_delegate")
    ratios = [r["ratio"] for r in per_round]
    result_probes = [
        {
            "swapped": name,
            "ratio_median": round(float(np.median(r)), 3),
            "ratio_range": [min(r), max(r)],
            "outside_delegate": probe_delegate[name],
        }
        for name, r in probe_ratios.items()
    ]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "cpu": cpu_summary(),
        "model": str(model),
        "baseline": str(float_model),
        "threads": 1,
        "runs_per_round": runs,
        "rounds": per_round,
        "int8_ms_median": round(float(np.median([r["int8_ms"] for r in per_round])), 4),
        "fp32_ms_median": round(float(np.median([r["fp32_ms"] for r in per_round])), 4),
        "ratio_median": round(float(np.median(ratios)), 3),
        "ratio_range": [min(ratios), max(ratios)],
        "fp32_ms_range": [
            min(r["fp32_ms"] for r in per_round),
            max(r["fp32_ms"] for r in per_round),
        ],
        "delegate": {k: lat[k].get("outside_delegate") for k in ("int8", "fp32")},
        **({"probes": result_probes} if probe else {}),
    }


def table(r: dict[str, Any]) -> str:
    from .model.latency import describe_cpu

    lines = [
        f"machine: {r['machine']}",
        f"CPU: {describe_cpu(r['cpu'])}",
        f"INT8 {r['model']} against float32 {r['baseline']}, one window, 1 thread, "
        f"{r['runs_per_round']} interleaved calls each per round",
        "",
        f"{'round':<7}{'INT8 ms':>10}{'float ms':>10}{'INT8/float':>12}",
    ]
    for i, row in enumerate(r["rounds"], 1):
        lines.append(f"{i:<7}{row['int8_ms']:>10.4f}{row['fp32_ms']:>10.4f}{row['ratio']:>12.3f}")
    lo, hi = r["ratio_range"]
    lines += [
        "",
        f"median: INT8 {r['int8_ms_median']} ms, float32 {r['fp32_ms_median']} ms, "
        f"INT8/float {r['ratio_median']} (rounds {lo}-{hi})",
        f"ops outside XNNPACK: INT8 {r['delegate']['int8'] or 'none'}, "
        f"float32 {r['delegate']['fp32'] or 'none'}",
    ]
    f_lo, f_hi = r["fp32_ms_range"]
    if f_hi > UNSTEADY_SPREAD * f_lo:
        lines.append(
            f"unsteady: float32's rounds took {f_lo}-{f_hi} ms, so the machine changed speed "
            "during the run and INT8/float may have moved with it; rerun, or compare rounds "
            "of like speed"
        )
    if "probes" in r:
        lines += [
            "",
            "probes (copies of the INT8 file, SOFTMAX swapped for LOGISTIC: outputs wrong, "
            "timing only; each against float32 in the same calls):",
        ]
        if not r["probes"]:
            lines.append("  none: the INT8 file has no SOFTMAX to swap")
        for p in r["probes"]:
            lo, hi = p["ratio_range"]
            lines.append(
                f"  {p['swapped']} swapped: INT8/float {p['ratio_median']} (rounds {lo}-{hi}), "
                f"ops outside XNNPACK: {p['outside_delegate'] or 'none'}"
            )
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.runs < 10:
        raise UsageError("bench model: --rounds must be >= 1 and --runs >= 10")
    from .model.card import fp32_path_for

    model = Path(args.model)
    float_model = Path(args.float_model) if args.float_model else fp32_path_for(model)
    r = run_model_bench(model, float_model, rounds=args.rounds, runs=args.runs, probe=args.probe)
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The model bench's options (on ``humigraph bench``)."""
    p.add_argument(
        "--model", default=str(DEFAULT_MODEL), help=f"INT8 .tflite (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--float-model", help="its float32 twin (default: the -fp32 file beside --model)"
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of the model bench (default 5)")
    p.add_argument(
        "--runs", type=int, default=1000, help="calls of each model per round (default 1000)"
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="model bench: also time copies of the INT8 file with its SOFTMAX ops (which XNNPACK "
        "leaves out) swapped for LOGISTIC, each alone and all; outputs wrong, timing only: how "
        "much of INT8/float is the graph's and how much this CPU's",
    )
