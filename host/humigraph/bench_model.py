"""``humigraph bench model``: the INT8 model against its float32 twin, side by side.

Both models run one simulated site window (a world recording encoded as the gateway encodes it) on
one thread, their calls interleaved (INT8, float32, float32, INT8, ...) so that whatever else the
machine does falls on both alike. Several rounds show the spread; the goal of the model issue is
INT8 no slower than float32 and under 1 ms per window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

DEFAULT_MODEL = Path("models/humigraph-int8.tflite")


def _window(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """One site window of the world simulator, in the model's card's encoding."""
    from .model.card import load_card
    from .model.data import load, make_windows

    card = load_card(model)
    w = make_windows(load("world:1?days=1"), card, max_windows=1, seed=0)
    return w.x[:1], w.node_mask[:1]


def run_model_bench(
    model: Path, float_model: Path, *, rounds: int = 5, runs: int = 1000
) -> dict[str, Any]:
    """``rounds`` rounds of :func:`humigraph.model.latency.latency_side_by_side`."""
    from .model.latency import cpu_summary, latency_side_by_side

    for p in (model, float_model):
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such model file (make train quantize writes models/)")
    x, mask = _window(model)
    per_round = []
    for _ in range(rounds):
        lat = latency_side_by_side({"int8": model, "fp32": float_model}, x, mask, runs=runs)
        per_round.append(
            {
                "int8_ms": lat["int8"]["median_ms"],
                "fp32_ms": lat["fp32"]["median_ms"],
                "ratio": round(lat["int8"]["median_ms"] / lat["fp32"]["median_ms"], 3),
            }
        )
    ratios = [r["ratio"] for r in per_round]
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
        "delegate": {k: lat[k].get("outside_delegate") for k in ("int8", "fp32")},
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
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.runs < 10:
        raise UsageError("bench model: --rounds must be >= 1 and --runs >= 10")
    from .model.card import fp32_path_for

    model = Path(args.model)
    float_model = Path(args.float_model) if args.float_model else fp32_path_for(model)
    r = run_model_bench(model, float_model, rounds=args.rounds, runs=args.runs)
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
