"""``humigraph train``, ``humigraph quantize``, ``humigraph evaluate``.

Data policy shared by the three commands: each ``--data`` SPEC is split by recording name
(``--holdout``, ``--split-seed``; the same defaults everywhere, so ``quantize`` and ``evaluate
--split test`` see exactly the recordings ``train`` never saw), and seeded faults are injected
(``--fault-rate``) so the fault head has labels on every source.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["register"]

DEFAULT_HOLDOUT = 0.2
DEFAULT_SPLIT_SEED = 0
DEFAULT_FAULT_RATE = 0.5
# windows per source: a stride that keeps one day of a 12-node world near the size of all of
# Room-Climate A, so no source drowns the others
DEFAULT_STRIDE = {"world": 3, "room-climate": 1, "uci-occupancy": 4}
# Deep-sleep boards in training: each epoch, about one training board in ten is read like a
# board asleep between reads. Without them a healthy board read every 5 minutes among boards
# reading as usual was called faulty in about a third of held-out Room-Climate windows
# (evaluate's sparse_reads); the gateway gave such boards no verdict at all. One read a minute
# (`interval: 60`, and the demo's boards) is one read in every step: each step's mean is a
# single 0.1-resolution read, so quiet rooms repeat steps exactly as a stuck sensor does; without
# it in training, a healthy simulated board read so was called faulty in 5.7 % of the judged
# held-out windows (docs/BENCHMARKS.md, "Five training seeds, with one-minute boards").
# Boards read every 20 or 30 s too: whole sites read every 30 s, never shown in training, got one
# to four false fault alarms per node-day on three seeds of four (docs/BENCHMARKS.md, "Whole
# sites reading every 10 to 60 s").
SLEEP_FRACTION = 0.1
SLEEP_PERIODS_S = (20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# train --steep-ok-weight (TrainConfig.steep_ok_weight): how much more a healthy board on a steep
# climb weighs in the fault loss; 10 measured on six seeds on two machines (docs/BENCHMARKS.md,
# "Showers taken for faults")
STEEP_OK_WEIGHT = 10.0
# train --reads: each step's count of good reads as an input (features.py, "reads"), so that a
# board read once a minute, with no spread inside its steps, is not taken for a stuck one
# (docs/BENCHMARKS.md, "The reads feature")
READS_FEATURE = True
# train --sleep-fault-share: the share of those thinned boards that get injected faults too;
# --sleep-fault-periods: only boards thinned to these periods (seconds; () = every period).
# Faults on the boards read every 20 s to once a minute only: with --reads, the fault head learns
# what a stuck sensor looks like at one to three reads per step; faults on the sparser boards too
# called a healthy board's drift (docs/BENCHMARKS.md, "The reads feature", variants B and E)
SLEEP_FAULT_SHARE = 1.0
SLEEP_FAULT_PERIODS_S = (20.0, 30.0, 60.0)
# train --site-sleep-fraction / --site-sleep-periods: each epoch, that share of the training
# recordings has every board read once per one of these periods, faults kept (a user sets one
# `interval` for a whole site). Off: on three seeds it fixed 20-30 s sites as well as the 20 and
# 30 s boards above do, and cost one seed its drift recall (docs/BENCHMARKS.md, same section).
SITE_SLEEP_FRACTION = 0.0
SITE_SLEEP_PERIODS_S = (20.0, 30.0, 60.0)


def register(subparsers: Any) -> None:
    t = subparsers.add_parser(
        "train",
        help="train the site reasoning model (or fine-tune one on a site's recordings)",
        description=(
            "Trains the adaptive graph model on windows of every --data SPEC (world:SEED, "
            "room-climate:DIR, uci-occupancy:DIR, csv:FILE, sqlite:///PATH, postgresql://...), "
            "validating on the held-out recordings each epoch, with early stopping. Checkpoints "
            "go to --out; running the same command again resumes. The best epoch is exported as "
            "a SavedModel to OUT/savedmodel, the input of humigraph quantize."
        ),
    )
    t.add_argument("--data", nargs="+", action="extend", required=True, metavar="SPEC")
    t.add_argument("--init", type=Path, metavar="MODEL", help="fine-tune from this SavedModel")
    t.add_argument("--out", type=Path, default=Path("build/model"), help="default: %(default)s")
    t.add_argument("--epochs", type=int, default=30, help="maximum epochs (default %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="training seed (default %(default)s)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate (default %(default)s)")
    t.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    t.add_argument("--steps-per-epoch", type=int, default=None, help="cap on batches per epoch")
    t.add_argument("--hidden", type=int, default=48, help="node state width (default 48)")
    t.add_argument(
        "--adjacency",
        choices=("softmax", "sigmoid"),
        default="softmax",
        help=(
            "how the learned adjacency weighs a node's neighbours: softmax (a distribution over "
            "them) or sigmoid (each pair's own probability of being coupled; int8 LOGISTIC runs "
            "in XNNPACK, int8 SOFTMAX does not) (default %(default)s; --init keeps the base's)"
        ),
    )
    t.add_argument("--max-windows", type=int, default=None, help="cap on windows per SPEC")
    t.add_argument(
        "--sleep-fraction",
        type=float,
        default=SLEEP_FRACTION,
        metavar="P",
        help=(
            "share of training boards read more seldom than the rest each epoch, once every one "
            "of --sleep-periods (a longer `interval`, deep sleep), so the fault head can judge "
            "such boards (default %(default)s; 0 turns it off)"
        ),
    )
    t.add_argument(
        "--sleep-periods",
        nargs="+",
        type=float,
        default=SLEEP_PERIODS_S,
        metavar="S",
        help=(
            "read periods in seconds the --sleep-fraction boards are thinned to, one picked per "
            "board (default: "
            f"{' '.join(str(int(p)) for p in SLEEP_PERIODS_S)}); the gateway judges no board "
            "read more seldom than the longest"
        ),
    )
    t.add_argument(
        "--site-sleep-fraction",
        type=float,
        default=SITE_SLEEP_FRACTION,
        metavar="P",
        help=(
            "share of training recordings whose every board is read once per one of "
            "--site-sleep-periods each epoch, faults kept, as a site set to one `interval` "
            "reads (default %(default)s; 0 turns it off)"
        ),
    )
    t.add_argument(
        "--site-sleep-periods",
        nargs="+",
        type=float,
        default=SITE_SLEEP_PERIODS_S,
        metavar="S",
        help=(
            "read periods in seconds for --site-sleep-fraction, one picked per recording "
            f"(default: {' '.join(str(int(p)) for p in SITE_SLEEP_PERIODS_S)})"
        ),
    )
    t.add_argument(
        "--steep-ok-weight",
        type=float,
        default=STEEP_OK_WEIGHT,
        metavar="W",
        help=(
            "fault-loss weight of a healthy board whose window spans 15 %%RH or 3 °C (a shower, "
            "cooking), so that fewer such climbs are taken for faults (default %(default)s; "
            "1 weighs them like any other board)"
        ),
    )
    t.add_argument(
        "--balance-insight",
        action=argparse.BooleanOptionalAction,
        default=False,
        help=(
            "weigh each insight's yes and no windows alike within each source in the insight "
            "loss, a window at most 2 times (default: off; on six seeds it raised a one-sensor "
            "office's occupancy, not Room-Climate's, and cost humidity: docs/BENCHMARKS.md)"
        ),
    )
    t.add_argument(
        "--reads",
        action=argparse.BooleanOptionalAction,
        default=READS_FEATURE,
        help=(
            "give the model each step's count of good reads (the card's 'reads' feature), so a "
            "board read once a minute is told from a stuck one (default: %(default)s; ignored "
            "with --init, which keeps the base model's features)"
        ),
    )
    t.add_argument(
        "--sleep-fault-share",
        type=float,
        default=SLEEP_FAULT_SHARE,
        metavar="P",
        help=(
            "share of the --sleep-fraction boards that get injected faults like the others "
            "(default %(default)s; 0 keeps them healthy)"
        ),
    )
    t.add_argument(
        "--sleep-fault-periods",
        nargs="+",
        type=float,
        default=SLEEP_FAULT_PERIODS_S,
        metavar="S",
        help=(
            "with --sleep-fault-share, only boards thinned to one of these --sleep-periods "
            "get faults (default: "
            f"{' '.join(str(int(p)) for p in SLEEP_FAULT_PERIODS_S)})"
        ),
    )
    _data_options(t)
    t.add_argument(
        "--target-scale",
        nargs="+",
        default=["t=0.25,0.5,1", "rh=1.25,2.5,5"],
        metavar="TARGET=S[,S,S]",
        help="forecast scale per target, one number or one per horizon (default "
        "t=0.25,0.5,1 rh=1.25,2.5,5: the forecast output spans ±2 scales); ignored with --init "
        "(the base model's card is kept)",
    )
    t.add_argument(
        "--source-weight",
        nargs="+",
        action="extend",
        default=[],
        metavar="KIND=W",
        help="weigh the --data SPECs of one kind (world, room-climate, uci-occupancy, csv, "
        "sqlite, ...) W times in the forecast and insight losses, after every SPEC has been "
        "made to weigh alike (default 1 each)",
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    q = subparsers.add_parser(
        "quantize",
        help="full-INT8 TFLite model, its float twin, model card and parity report",
        description=(
            "Converts a SavedModel of humigraph train to a full-integer INT8 .tflite (int8 in and "
            "out, TFLITE_BUILTINS_INT8 only; fails if any op would stay float) calibrated on at "
            "least 200 real windows of --calibration, writes the float32 .tflite beside it, the "
            "model card (.json and .md) and plots, with the parity of INT8 against float, task "
            "metrics of both on the held-out recordings, every op, file sizes and latency."
        ),
    )
    q.add_argument("--model", type=Path, required=True, metavar="SAVEDMODEL")
    q.add_argument("--calibration", nargs="+", action="extend", required=True, metavar="SPEC")
    q.add_argument("--out", type=Path, required=True, metavar="FILE.tflite")
    q.add_argument("--calibration-windows", type=int, default=400, help="default %(default)s")
    q.add_argument(
        "--eval-windows", type=int, default=1500, help="held-out windows for the report (1500)"
    )
    q.add_argument(
        "--fault-threshold",
        default="auto",
        metavar="auto|none|P",
        help="fault decision stored in the card: 'ok' unless 1 - p(ok) > P; 'auto' (default) "
        "picks P on the training recordings (best macro-F1 among the P that keep every "
        "source under --false-alarm-goal with --false-alarm-confidence); 'none' = the most "
        "probable class",
    )
    q.add_argument(
        "--false-alarm-goal", type=float, default=1.0, help="per node-day, for auto (1.0)"
    )
    q.add_argument(
        "--false-alarm-confidence",
        type=float,
        default=0.8,
        help="auto keeps the upper confidence bound of each source's false-alarm rate under the "
        "goal: a source seen for a few node-days must stay well under it (0.8)",
    )
    q.add_argument(
        "--insight-threshold",
        default="auto",
        choices=("auto", "none"),
        help="per insight (occupancy, ventilation), the probability from which the gateway and "
        "evaluate say yes, stored in the card; 'auto' (default) picks it on the training "
        "recordings for the best mean balanced accuracy over the sources; 'none' = 0.5",
    )
    q.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="keep the converter's int8 biases; by default each layer's bias is corrected for "
        "the mean shift its weights' rounding causes on the calibration windows",
    )
    _data_options(q)
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quantize)

    e = subparsers.add_parser(
        "evaluate",
        help="forecast, fault, insight and adjacency metrics of a .tflite model on a data SPEC",
        description=(
            "Forecast MAE per horizon next to persistence and a linear trend; fault precision, "
            "recall and F1 per class on seeded injected faults, false alarms on clean stretches, "
            "and how often a healthy board is called faulty in its first minutes after it starts "
            "reading; occupancy and ventilation accuracy next to the base rate; adjacency AUC on "
            "world data."
        ),
    )
    e.add_argument("--model", type=Path, required=True, metavar="FILE")
    e.add_argument("--data", nargs="+", action="extend", required=True, metavar="SPEC")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument(
        "--split",
        choices=("all", "test", "train"),
        default="all",
        help="which recordings: all, or the held-out (test) or training side of the split; "
        "with test, the ridge and GBT baselines are fitted on the training side",
    )
    e.add_argument("--max-windows", type=int, default=3000, help="cap per SPEC (default 3000)")
    _data_options(e)
    e.set_defaults(func=cmd_evaluate)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, help="share held out (0.2)")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED, help="split seed (0)")
    p.add_argument(
        "--fault-rate",
        type=float,
        default=DEFAULT_FAULT_RATE,
        help="share of node segments given an injected fault (default %(default)s)",
    )
    p.add_argument("--stride", type=int, default=None, help="window stride in steps (per source)")


# ---------------------------------------------------------------------------------- data


def _stride(spec: str, override: int | None) -> int:
    if override is not None:
        if override < 1:
            raise UsageError(f"--stride must be >= 1, got {override}")
        return override
    return DEFAULT_STRIDE.get(spec.partition(":")[0], 1)


def load_split(
    specs: Sequence[str],
    holdout: float,
    split_seed: int,
    echo: Callable[[str], None],
    *,
    split_single: bool = False,
) -> list[tuple[str, list[Any], list[Any]]]:
    """``[(spec, train recordings, held-out recordings)]`` per SPEC. With ``split_single``, a SPEC
    that is one recording (a gateway store of one site) is split in time instead: its last
    ``holdout`` share validates."""
    from . import data

    res = []
    for spec in specs:
        recs = data.load(spec)
        tr, te = data.split(recs, holdout=holdout, seed=split_seed)
        if split_single and len(recs) == 1 and holdout > 0:
            tr, te = time_split(recs[0], 1.0 - holdout)
            echo(
                f"{spec}: 1 recording, its first {1 - holdout:.0%} for training, the rest held out"
            )
        else:
            echo(f"{spec}: {len(recs)} recording(s), {len(tr)} for training, {len(te)} held out")
        res.append((spec, tr, te))
    return res


def time_split(rec: Any, frac: float) -> tuple[list[Any], list[Any]]:
    """One recording cut at ``frac`` of its time span into an early and a late recording."""
    cut = rec.start + frac * rec.duration_s

    def part(early: bool, suffix: str) -> Any:
        r = rec.copy()
        r.name = f"{rec.name}#{suffix}"
        keep = [(ts < cut) if early else (ts >= cut) for ts in rec.ts]
        for attr in ("ts", "t", "rh", "ok", "truth_t", "truth_rh"):
            arrays = getattr(r, attr)
            if arrays is not None:
                setattr(r, attr, [a[k] for a, k in zip(arrays, keep, strict=True)])
        if r.faults is not None:
            r.faults = [(a[(a < cut) == early], b[(a < cut) == early]) for a, b in r.faults]
        for attr in ("occupancy", "ventilation"):
            lab = getattr(r, attr)
            if lab is not None:
                k = (lab[0] < cut) if early else (lab[0] >= cut)
                setattr(r, attr, (lab[0][k], lab[1][k]))
        return r

    return [part(True, "early")], [part(False, "late")]


def thin_some(
    recs: list[Any],
    *,
    seed: int,
    fraction: float = SLEEP_FRACTION,
    periods_s: Sequence[float] = SLEEP_PERIODS_S,
    fault_share: float = SLEEP_FAULT_SHARE,
    fault_periods: Sequence[float] = SLEEP_FAULT_PERIODS_S,
    site_fraction: float = SITE_SLEEP_FRACTION,
    site_periods_s: Sequence[float] = SITE_SLEEP_PERIODS_S,
) -> list[Any]:
    """``recs`` with each node, with probability ``fraction``, read once per one of
    ``periods_s`` (data.thin_node) and listed in ``meta["no_faults"]``, but for a
    ``fault_share`` of those thinned to one of ``fault_periods`` (() = any); and, with
    probability ``site_fraction``, a recording's every node read once per one of
    ``site_periods_s`` instead, faults kept. Seeded per recording name; the input is not
    changed."""
    from .data import thin_node
    from .data_types import name_seed

    out = []
    for rec in recs:
        # its own stream (+ 2), so that site_fraction 0 leaves the boards' picks as they were
        site_rng = np.random.default_rng(name_seed(seed, rec.name) + 2) if site_fraction else None
        if site_rng is not None and site_rng.random() < site_fraction:
            period = float(site_rng.choice(site_periods_s))
            r = rec.copy()
            for i in range(len(r.nodes)):
                thin_node(r, i, period)
            out.append(r)
            continue
        # + 1: inject_faults seeds its stream with name_seed(seed, name) itself; keep them apart
        rng = np.random.default_rng(name_seed(seed, rec.name) + 1)
        picks = [(rng.random() < fraction, float(rng.choice(periods_s))) for _ in rec.nodes]
        if not any(p for p, _ in picks):
            out.append(rec)
            continue
        r = rec.copy()
        for i, (pick, period) in enumerate(picks):
            if pick:
                thin_node(r, i, period)
        # a board thinned to 2-10 minutes stays healthy (inject.inject_faults spares it): it
        # shows the fault head that sparse reads are no fault; with faults injected into all of
        # them, the dense boards' fault F1 fell on some training seeds (BENCHMARKS.md). Those of
        # fault_periods (20 s to one read a minute, by default) keep their faults, so that the head
        # still learns a stuck sensor read that seldom.
        r.meta["no_faults"] = [
            i
            for i, (pick, period) in enumerate(picks)
            if pick
            and not (
                (not fault_periods or period in fault_periods) and rng.random() >= 1.0 - fault_share
            )
        ]
        out.append(r)
    return out


def windows_for(
    recs: list[Any],
    spec: str,
    card: Any,
    *,
    fault_rate: float,
    seed: int,
    stride: int | None,
    max_windows: int | None,
) -> tuple[Any, list[Any]]:
    """Faults injected (seeded) and windows made: ``(Windows, the recordings they index)``."""
    from . import data

    if not recs:
        return None, []
    injected = (
        data.inject_faults(recs, rate=fault_rate, seed=seed, spike_memory_s=card.window_s)
        if fault_rate > 0
        else recs
    )
    w = data.make_windows(
        injected, card, stride_steps=_stride(spec, stride), max_windows=max_windows, seed=seed
    )
    return (w if len(w) else None), injected


def _merge(parts: list[tuple[Any, list[Any]]]) -> tuple[Any, list[Any]]:
    """Windows of several sources in one; ``rec`` re-indexed into the concatenated recordings."""
    from .data_types import Windows

    ws, recs, source = [], [], []
    for i, (w, r) in enumerate(parts):
        if w is None:
            continue
        w.rec = w.rec + len(recs)
        ws.append(w)
        recs.extend(r)
        source.append(np.full(len(w), i, np.int64))
    if not ws:
        return None, []
    merged = Windows.concat(ws)
    merged.source = np.concatenate(source)  # the SPEC each window came from (train.SourceBalance)
    return merged, recs


def attach_adjacency(w: Any, recs: list[Any], nodes: int) -> None:
    """``w.adj_true [W, nodes, nodes]`` (uint8): the recording's true coupling (> 0) where it is
    known (world simulator), all zero elsewhere; the training loss uses it (train._batch)."""
    adj = np.zeros((len(w), nodes, nodes), np.uint8)
    for ri in np.unique(w.rec):
        truth = recs[int(ri)].adjacency
        if truth is None:
            continue
        n = min(len(recs[int(ri)].nodes), nodes)
        adj[w.rec == ri, :n, :n] = (np.asarray(truth)[:n, :n] > 0).astype(np.uint8)
    w.adj_true = adj


def parse_source_weights(items: Sequence[str], specs: Sequence[str]) -> tuple[float, ...]:
    """``["room-climate=2"]`` with the --data SPECs -> one factor per SPEC, in their order."""
    kinds = [spec.split(":", 1)[0] for spec in specs]
    weights: dict[str, float] = {}
    for item in items:
        kind, _, value = item.partition("=")
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not kind or not w > 0:
            raise UsageError(
                f"--source-weight {item!r}: expected KIND=W with a positive W, e.g. room-climate=2"
            )
        if kind not in kinds:
            raise UsageError(
                f"--source-weight {item!r}: no --data SPEC of kind {kind!r} "
                f"(the kinds given: {', '.join(dict.fromkeys(kinds))})"
            )
        weights[kind] = w
    return tuple(weights.get(k, 1.0) for k in kinds)


def parse_target_scale(items: Sequence[str]) -> dict[str, float | list[float]]:
    """``["t=0.5,1,1", "rh=5"]`` -> ``{"t": [0.5, 1.0, 1.0], "rh": 5.0}`` (the card's two forms)."""
    out: dict[str, float | list[float]] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            nums = [float(v) for v in value.split(",")]
        except ValueError:
            nums = []
        if not name or not nums or any(not v > 0 for v in nums):
            raise UsageError(
                f"--target-scale {item!r}: expected TARGET=S or TARGET=S,S,S with positive "
                f"numbers, e.g. t=0.5,1,1"
            )
        out[name] = nums[0] if len(nums) == 1 else nums
    return out


def _echo(quiet: bool = False) -> Callable[[str], None]:
    def echo(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return echo


# ---------------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from .arch import ArchConfig
    from .card import FEATURES, ModelCard, forecast_compand
    from .train import TrainConfig, train

    echo = _echo(False)
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    card = ModelCard(
        model_id="humigraph-savedmodel",
        # finer than the card's defaults: one int8 step of the input is then 0.016 °C / 0.06 %RH
        # of change, below what a calm room moves in 5 minutes (changes past ±2 °C / ±8 %RH over
        # the 32-minute window saturate; the absolute t, rh channels still carry them). The
        # forecast is soft-clipped at ±clip_out (2) target scales, one scale per horizon
        # (--target-scale): ±0.5 °C at +5 min, ±2 °C at +30 min; int8 output step 0.004 °C at +5.
        normalization={
            "t": {"center": 21.0, "scale": 5.0},
            "rh": {"center": 45.0, "scale": 20.0},
            "dt": {"center": 0.0, "scale": 0.5},
            "drh": {"center": 0.0, "scale": 2.0},
        },
        target_scale=parse_target_scale(args.target_scale),
        forecast_compand=forecast_compand(ArchConfig().clip_out),
        input_clip=ArchConfig().clip_in,  # the host clips; see ModelCard.input_clip
        features=(*FEATURES, "reads") if args.reads else FEATURES,
    )
    card.validate("--target-scale")
    source_weights = parse_source_weights(args.source_weight, args.data)
    if args.init is not None:
        from .arch import CARD_FILE

        card_file = Path(args.init) / CARD_FILE
        if card_file.is_file():
            base = ModelCard.from_json(json.loads(card_file.read_text()), where=str(card_file))
            base.metrics, base.training = {}, {}
            base.fault_threshold = None  # quantize picks the fault rule for the new model
            base.insight_threshold = None  # and the insights' thresholds
            card = base
    if not 0 <= args.sleep_fraction <= 1:
        raise UsageError(f"--sleep-fraction must be in [0, 1], got {args.sleep_fraction}")
    if not 0 <= args.site_sleep_fraction <= 1:
        raise UsageError(f"--site-sleep-fraction must be in [0, 1], got {args.site_sleep_fraction}")
    if not 0 <= args.sleep_fault_share <= 1:
        raise UsageError(f"--sleep-fault-share must be in [0, 1], got {args.sleep_fault_share}")
    for flag, periods in (
        ("--sleep-periods", args.sleep_periods),
        ("--site-sleep-periods", args.site_sleep_periods),
    ):
        bad_periods = [p for p in periods if not p > 0]
        if bad_periods:
            raise UsageError(f"{flag} must be > 0 seconds, got {bad_periods}")
    odd = [p for p in args.sleep_fault_periods if p not in args.sleep_periods]
    if odd:
        raise UsageError(
            f"--sleep-fault-periods: {odd} are not thinning periods; pick from "
            f"--sleep-periods {' '.join(f'{p:g}' for p in args.sleep_periods)}"
        )
    if not args.steep_ok_weight > 0:
        raise UsageError(f"--steep-ok-weight must be > 0, got {args.steep_ok_weight}")
    # the gateway judges boards as sparse as training showed the fault head, and no sparser
    sparse = [
        *(args.sleep_periods if args.sleep_fraction > 0 else []),
        *(args.site_sleep_periods if args.site_sleep_fraction > 0 else []),
    ]
    card.max_read_interval_s = max(sparse, default=None)
    sources = load_split(args.data, args.holdout, args.split_seed, echo, split_single=True)

    def epoch_windows(epoch: int) -> Any:
        # faults are injected afresh each epoch (seeded by seed and epoch): a fixed set of
        # injected faults is memorized within a few epochs
        parts = [
            windows_for(
                thin_some(
                    tr,
                    seed=args.seed * 1000 + epoch,
                    fraction=args.sleep_fraction,
                    periods_s=tuple(args.sleep_periods),
                    fault_share=args.sleep_fault_share,
                    fault_periods=tuple(args.sleep_fault_periods),
                    site_fraction=args.site_sleep_fraction,
                    site_periods_s=tuple(args.site_sleep_periods),
                ),
                spec,
                card,
                fault_rate=args.fault_rate,
                seed=args.seed * 1000 + epoch,
                stride=args.stride,
                max_windows=args.max_windows,
            )  # fmt: skip
            for spec, tr, _ in sources
        ]
        w, recs = _merge(parts)
        if w is None:
            raise UsageError("--data: no training windows; recordings must be longer than a window")
        attach_adjacency(w, recs, card.nodes)
        return w

    va_parts = []
    for spec, _, te in sources:
        w_va = windows_for(te, spec, card, fault_rate=args.fault_rate, seed=args.seed + 999,
                           stride=args.stride, max_windows=args.max_windows)  # fmt: skip
        echo(f"{spec}: {len(w_va[0]) if w_va[0] is not None else 0} validation windows")
        va_parts.append(w_va)
    val_w, val_recs = _merge(va_parts)
    if val_w is not None:
        attach_adjacency(val_w, val_recs, card.nodes)
    if val_w is None:
        raise UsageError(
            "--data: no validation windows; give two or more recordings (whole recordings are "
            "held out) or raise --holdout"
        )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
        source_weights=source_weights,
        steep_ok_weight=args.steep_ok_weight,
        balance_insight=args.balance_insight,
        progress=not args.quiet,
    )
    info = {
        "data": list(args.data),
        "source_weights": list(source_weights),
        "holdout": args.holdout,
        "split_seed": args.split_seed,
        "fault_rate": args.fault_rate,
        "held_out": sorted(r.name for _, _, te in sources for r in te),
    }
    res = train(
        epoch_windows,
        val_w,
        card,
        args.out,
        cfg,
        arch=ArchConfig(hidden=args.hidden, adjacency=args.adjacency),
        init=args.init,
        info=info,
        echo=echo,
    )
    print(
        f"saved {res.savedmodel} (best epoch {res.best_epoch} of {res.epochs_run}, "
        f"validation loss {res.best_val:.4f})"
    )
    return 0


# ------------------------------------------------------------------------------- quantize


def cmd_quantize(args: argparse.Namespace) -> int:
    from .arch import load_model
    from .latency import cpu_summary
    from .quantize import convert, latency_side_by_side, model_id
    from .report import fixed_parity, parity, run_model, task_metrics, write_markdown, write_plots
    from .train import limit_threads

    echo = _echo(args.quiet)
    limit_threads()
    out = Path(args.out)
    model = load_model(args.model)
    card = model.card
    sources = load_split(args.calibration, args.holdout, args.split_seed, echo)
    cal_parts, ev_parts = [], []
    for spec, tr, te in sources:
        cal_parts.append(windows_for(tr, spec, card, fault_rate=args.fault_rate, seed=7,
                                     stride=args.stride, max_windows=args.calibration_windows))  # fmt: skip
        ev_parts.append(windows_for(te, spec, card, fault_rate=args.fault_rate, seed=1001,
                                    stride=args.stride, max_windows=args.eval_windows))  # fmt: skip
    cal, _ = _merge(cal_parts)
    if cal is None:
        raise UsageError("--calibration: no windows; give longer recordings")
    if len(cal) > args.calibration_windows:
        keep = np.sort(np.random.default_rng(7).choice(len(cal), args.calibration_windows, False))
        cal = cal.take(keep)
    ev, ev_recs = _merge(ev_parts)
    if ev is None:  # a single recording: report on (part of) the calibration side instead
        ev, ev_recs = _merge(cal_parts)
    int8, fp32, ops, corrected, symmetric = convert(
        args.model,
        cal,
        out,
        bias_correction=args.bias_correction,
        echo=echo,
        progress=_bar(args.quiet)("bias correction", "layer"),
    )  # convert checked the written file (check_int8)
    echo(f"wrote {int8} ({int8.stat().st_size} bytes) and {fp32} ({fp32.stat().st_size} bytes)")

    from ..runtime import Runtime
    from .card import ModelCard

    def card_for(quant: str, path: Path) -> ModelCard:
        c = ModelCard(**{k: getattr(card, k) for k in card.__dataclass_fields__})
        c.quantization = quant
        c.model_id = model_id(path)
        c.metrics = {}
        return c

    card_q, card_f = card_for("int8", int8), card_for("float32", fp32)
    card_q.extra = {**card_q.extra, "float_model": fp32.name, "float_model_id": card_f.model_id}
    card_f.extra = {**card_f.extra, "int8_model": int8.name, "int8_model_id": card_q.model_id}
    card_q.save(int8.with_suffix(".json"))
    card_f.save(fp32.with_suffix(".json"))
    train_sets = [tr for _, tr, _ in sources]
    threshold, sweep = _fault_threshold(args, int8, train_sets, echo)
    insight_thr, insight_sweep = _insight_threshold(args, int8, train_sets, echo)
    for c, path in ((card_q, int8), (card_f, fp32)):  # the gateway runs INT8: one rule for both
        c.fault_threshold = threshold
        c.insight_threshold = insight_thr
        c.save(path.with_suffix(".json"))
    rt_q, rt_f = Runtime(int8, card=card_q), Runtime(fp32, card=card_f)
    bar = _bar(args.quiet)
    echo(f"running both models on {len(ev)} held-out windows")
    out_q = run_model(rt_q, ev, bar("INT8"))
    out_f = run_model(rt_f, ev, bar("float32"))
    par = parity(ev, out_q, out_f)
    par_fixed = fixed_parity(rt_q, rt_f, card_q)
    task_q = task_metrics(ev, out_q, card_q, ev_recs)
    task_f = task_metrics(ev, out_f, card_f, ev_recs)
    from .evaluate import evaluate

    held_out_eval: dict[str, Any] = {}
    for spec, tr, te in sources:
        if not te:
            continue
        echo(f"evaluate: {spec}, {len(te)} held-out recording(s), INT8 and float32")
        row = {}
        for kind, path in (("int8", int8), ("fp32", fp32)):
            row[kind] = evaluate(path, te, max_windows=args.eval_windows, fault_rate=args.fault_rate,
                                 baselines=kind == "int8", baseline_train=tr)  # fmt: skip
            row[kind]["data"] = f"{spec} (held-out recordings)"
        held_out_eval[spec] = row
    x0, m0 = ev.x[:1], ev.node_mask[:1]
    lat = latency_side_by_side({"int8": int8, "fp32": fp32}, x0, m0)
    lat["cpu"] = cpu_summary()  # the int8/float ratio is the CPU's as much as the model's
    op_counts: dict[str, dict[str, Any]] = {}
    for op in ops:
        d = op_counts.setdefault(op["op"], {"count": 0, "dtype": "/".join(op["outputs"])})
        d["count"] += 1
    clean_held_out = [r for _, _, te in sources for r in te]
    router_case, router_metrics = _router_case(rt_q, clean_held_out, card_q, echo, model)
    eval_info = {
        "data": list(args.calibration),
        "split": f"held-out recordings (holdout {args.holdout}, seed {args.split_seed})",
        "fault_rate": args.fault_rate,
        "windows": len(ev),
        "calibration_windows": len(cal),
        "bias_correction": corrected,
        "symmetric_operands": symmetric,
    }
    metrics = {
        "files": {
            "int8": {"name": int8.name, "bytes": int8.stat().st_size},
            "fp32": {"name": fp32.name, "bytes": fp32.stat().st_size},
        },
        "latency": lat,
        "parity": par,
        "parity_fixed": par_fixed,
        "task": {"int8": task_q, "fp32": task_f},
        "evaluate": held_out_eval,
        "evaluation": eval_info,
        "ops": op_counts,
        "ops_list": [f"{o['op']}:{'/'.join(o['outputs'])}" for o in ops],
        "router_fault": router_metrics,
        "fault_threshold": {
            "chosen": threshold,
            "goal": args.false_alarm_goal,
            "confidence": args.false_alarm_confidence,
            "training_sweep": sweep,
        },  # fmt: skip
        "insight_threshold": {"chosen": insight_thr, "training_sweep": insight_sweep},
    }
    forecast_case = _forecast_case(rt_q, rt_f, clean_held_out, card_q)
    plots = write_plots(
        int8.with_suffix(""), ev, out_q, out_f, ev_recs, card_q, task_q, router_case, forecast_case
    )
    metrics["plots"] = plots
    card_q.metrics = metrics
    card_f.metrics = {k: metrics[k] for k in ("files", "latency", "evaluation")}
    card_f.metrics["task"] = {"fp32": task_f}
    card_f.metrics["evaluate"] = {k: {"fp32": v["fp32"]} for k, v in held_out_eval.items()}
    card_q.save(int8.with_suffix(".json"))
    card_f.save(fp32.with_suffix(".json"))
    write_markdown(int8.with_suffix(".md"), card_q, plots)
    fc = task_q["forecast"]
    print(f"{int8}: {int8.stat().st_size} B, {lat['int8']['median_ms']} ms; "
          f"{fp32.name}: {fp32.stat().st_size} B, {lat['fp32']['median_ms']} ms")  # fmt: skip
    for h, row in fc.items():
        parts = [f"{k} MAE {v['mae']:.4f} (persistence {v['persistence']:.4f})"
                 for k, v in row.items() if v]  # fmt: skip
        print(f"  +{int(h) // 60} min: " + "; ".join(parts))
    print(
        f"  fault macro-F1 INT8 {task_q['faults']['macro_f1']} float {task_f['faults']['macro_f1']}"
    )
    return 0


def _fault_threshold(
    args: argparse.Namespace, int8: Path, train_sets: list[Any], echo: Callable[[str], None]
) -> tuple[float | None, list[dict[str, Any]] | None]:
    """The card's fault rule from --fault-threshold; 'auto' sweeps the INT8 model over the
    training recordings (never the held-out ones the card reports on)."""
    value = str(args.fault_threshold).strip().lower()
    if value == "none":
        return None, None
    if value != "auto":
        try:
            thr = float(value)
        except ValueError:
            thr = -1.0
        if not 0 <= thr < 1:
            raise UsageError(
                f"--fault-threshold: expected auto, none or a number in [0, 1), got {value!r}"
            )
        return thr, None
    from .evaluate import choose_fault_threshold, fault_threshold_sweep

    if not 0.0 < args.false_alarm_confidence < 1.0:
        raise UsageError(
            f"--false-alarm-confidence must be between 0 and 1 (exclusive), got "
            f"{args.false_alarm_confidence}; 0.8 is the default"
        )
    sets = [s for s in train_sets if s]
    if not sets:
        return None, None
    echo(f"choosing the fault threshold on {sum(map(len, sets))} training recording(s)")
    sweep = fault_threshold_sweep(
        int8, sets, max_windows=args.eval_windows, fault_rate=args.fault_rate, seed=11
    )
    thr = choose_fault_threshold(sweep, args.false_alarm_goal, args.false_alarm_confidence)
    for row in sweep:
        echo(f"  threshold {row['threshold']}: macro-F1 {row['macro_f1']}, false alarms "
             f"{row['false_alarm_episodes']} in {row['node_days']} node-days")  # fmt: skip
    echo(f"fault rule: {'most probable class' if thr is None else f'ok unless p(fault) > {thr}'}")
    return thr, sweep


def _insight_threshold(
    args: argparse.Namespace, int8: Path, train_sets: list[Any], echo: Callable[[str], None]
) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    """The card's insight thresholds from --insight-threshold; 'auto' sweeps the INT8 model over
    the training recordings (never the held-out ones the card reports on)."""
    if args.insight_threshold == "none":
        return None, None
    from .evaluate import choose_insight_threshold, insight_threshold_sweep

    sets = [s for s in train_sets if s]
    if not sets:
        return None, None
    sweep = insight_threshold_sweep(int8, sets, max_windows=args.eval_windows, seed=11)
    if not sweep:
        echo("insight thresholds: no occupancy or ventilation labels in the training recordings")
        return None, None
    chosen = choose_insight_threshold(sweep)
    for name, thr in chosen.items():
        row = next(r for r in sweep[name] if r["threshold"] == thr)
        at_half = next(r for r in sweep[name] if r["threshold"] == 0.5)
        echo(f"insight rule: {name} when p >= {thr} (training balanced accuracy per source "
             f"{row['balanced_accuracy']}; at 0.5: {at_half['balanced_accuracy']})")  # fmt: skip
    return chosen, sweep


def _bar(quiet: bool) -> Callable[..., Callable[[Any], Any] | None]:
    def make(desc: str, unit: str = "window") -> Callable[[Any], Any] | None:
        if quiet:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return lambda it: tqdm(it, desc=desc, unit=unit, leave=False)

    return make


def _forecast_case(rt_q: Any, rt_f: Any, recs: list[Any], card: Any) -> Any:
    """Clean windows of one held-out real recording (Room-Climate first), both models' outputs."""
    from . import data
    from .report import run_model

    real = [r for r in recs if r.adjacency is None] or list(recs)
    if not real:
        return None
    real.sort(key=lambda r: (not r.name.startswith("room-climate"), -r.duration_s))
    rec = real[0]
    w = data.make_windows([rec], card, stride_steps=1, max_windows=600)
    if not len(w):
        return None
    w = w.take(np.arange(min(len(w), 600)))
    return w, run_model(rt_q, w), run_model(rt_f, w), f"{rec.name} node {rec.nodes[0]} (held out)"


def _router_case(
    rt: Any, recs: list[Any], card: Any, echo: Callable[[str], None], model: Any = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A held-out world recording with one node's sensor stuck for 3 hours: that node's forecast
    error and router weights against the same stretch without the fault."""
    from . import data
    from .report import run_model

    world = [
        r for r in recs if r.truth_t is not None and r.adjacency is not None and len(r.nodes) > 2
    ]
    if not world:
        return None, None
    base = world[0].copy()
    base.faults = None
    mid = base.start + base.duration_s / 2
    t0, t1 = mid - 1.5 * 3600, mid + 1.5 * 3600
    node = 0
    faulty = base.copy()
    ts = faulty.ts[node]
    inside = (ts >= t0) & (ts <= t1)
    if not inside.any():
        return None, None
    first = int(np.flatnonzero(inside)[0])
    faulty.t[node] = np.where(inside, faulty.t[node][first], faulty.t[node])
    faulty.rh[node] = np.where(inside, faulty.rh[node][first], faulty.rh[node])
    faulty.ok[node] = np.where(inside, True, faulty.ok[node])
    stuck = card.fault_classes.index("stuck")
    faulty.faults = [(a.copy(), np.zeros(len(a), np.int64)) for a in faulty.ts]
    faulty.faults[node] = (ts.copy(), np.where(inside, stuck, 0))
    echo(f"router check: {base.nodes[node]} of {base.name} stuck for 3 h")
    wins = [data.make_windows([r], card, stride_steps=2) for r in (base, faulty)]
    outs = [run_model(rt, w) for w in wins]
    w_c, w_f = wins
    sel = (w_f.end_ts > t0 + card.window_s / 2) & (w_f.end_ts <= t1)
    if not sel.any():
        return None, None

    def node_mae(w: Any, o: dict[str, np.ndarray]) -> float:
        m = w.y_forecast_mask[sel, node] > 0
        err = np.abs(o["forecast"][sel, node] - w.y_forecast[sel, node])[..., 0]  # t, normalized
        return float(np.mean((err * card.scale_array()[:, 0])[m]))  # °C, per horizon's scale

    mae_clean, mae_fault = node_mae(w_c, outs[0]), node_mae(w_f, outs[1])
    ablation = None
    if model is not None:
        # the same float model with the router pinned to the node's own history, against the
        # same float model with its router (INT8 numbers above are of the .tflite)
        from .arch import tf

        def float_out(w: Any, own_only: bool) -> dict[str, np.ndarray]:
            o = model.forward(tf.constant(w.x), tf.constant(w.node_mask), own_only=own_only)
            return {"forecast": o["change"].numpy()}  # in target scales, as the runtime's

        ablation = {
            "float_t_mae_faulted_with_router": round(node_mae(w_f, float_out(w_f, False)), 4),
            "float_t_mae_faulted_own_only": round(node_mae(w_f, float_out(w_f, True)), 4),
            "float_t_mae_clean_with_router": round(node_mae(w_c, float_out(w_c, False)), 4),
        }
    r_c = float(np.mean(outs[0]["router"][sel, node, 1]))
    r_f = float(np.mean(outs[1]["router"][sel, node, 1]))
    pred_stuck = float(np.mean(card.fault_decision(outs[1]["fault"][sel, node]) == stuck))
    n = len(base.nodes)
    metrics = {
        "recording": base.name,
        "node": base.nodes[node],
        "fault": "stuck, 3 h",
        "t_mae_clean": round(mae_clean, 4),
        "t_mae_faulted": round(mae_fault, 4),
        "ratio": round(mae_fault / mae_clean, 3) if mae_clean > 0 else None,
        "router_neighbours_clean": round(r_c, 3),
        "router_neighbours_faulted": round(r_f, 3),
        "detected_as_stuck": round(pred_stuck, 3),
        "ablation": ablation,
    }
    metrics["summary"] = (
        f"{base.nodes[node]} of {base.name} held stuck for 3 h: its +{card.horizons_s[0] // 60}.."
        f"+{card.horizons_s[-1] // 60} min temperature forecast MAE {mae_fault:.3f} °C against "
        f"{mae_clean:.3f} °C on the same stretch without the fault (ratio "
        f"{metrics['ratio']}); router weight on neighbours {r_c:.2f} -> {r_f:.2f}; "
        f"classified stuck in {pred_stuck:.0%} of the faulted windows."
    )
    if ablation:
        metrics["summary"] += (
            f" Float model on the faulted stretch: MAE {ablation['float_t_mae_faulted_with_router']} "
            f"°C with the router, {ablation['float_t_mae_faulted_own_only']} °C with the router "
            f"pinned to the node's own history."
        )
    case = {
        "minutes": (w_f.end_ts - w_f.end_ts[0]) / 60,
        "reading": w_f.last[:, node, 0],
        "truth": w_c.last[:, node, 0],
        "router_faulted": outs[1]["router"][:, node, 1],
        "router_others": outs[1]["router"][:, 1:n, 1].mean(axis=1),
        "fault_start": (t0 - w_f.end_ts[0]) / 60,
        "fault_end": (t1 - w_f.end_ts[0]) / 60,
        "title": f"router under a stuck sensor: {base.nodes[node]} of {base.name}",
    }
    return case, metrics


# ------------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, print_table

    if args.max_windows is not None and args.max_windows < 1:
        raise UsageError(f"--max-windows must be >= 1, got {args.max_windows}")
    results = []
    if args.split == "all":
        targets: list[tuple[str, Any, Any]] = [(spec, spec, None) for spec in args.data]
    else:
        sources = load_split(args.data, args.holdout, args.split_seed, _echo(args.json))
        # on the test side, the baselines learn from the training side, as the model did
        targets = [
            (spec, tr, None) if args.split == "train" else (spec, te, tr)
            for spec, tr, te in sources
        ]
    for spec, what, base_train in targets:
        if not isinstance(what, str) and not what:
            raise UsageError(
                f"--data {spec}: no recordings on the {args.split} side of the split "
                f"(holdout {args.holdout}); use --split all"
            )
        res = evaluate(args.model, what, max_windows=args.max_windows, fault_rate=args.fault_rate,
                       baseline_train=base_train, stride=args.stride)  # fmt: skip
        res["data"] = spec if args.split == "all" else f"{spec} ({args.split} split)"
        results.append(res)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
        return 0
    for res in results:
        print_table(res)
        print()
    return 0
