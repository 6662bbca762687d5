"""Training: masked multi-task losses, Adam, validation each epoch, early stopping, resumable.

Checkpoints live in ``<out>/checkpoint/`` (``state.json`` plus the last and best weights with the
optimizer moments); running :func:`train` again with the same ``out`` continues where it stopped.
The best epoch (lowest validation loss) is exported as a SavedModel to ``<out>/savedmodel``.

Losses (each masked where its labels are missing, so a site's own unlabelled recordings still train
the forecast head when fine-tuning): Huber on the normalized forecast change, class-weighted cross
entropy on the fault class, binary cross entropy on the insights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .arch import ArchConfig, SiteModel, load_model, save_model, tf
from .card import ModelCard
from .data_types import Windows
from .features import late_start, soft_clip, soft_unclip, steep_nodes

__all__ = ["TrainConfig", "TrainResult", "limit_threads", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
SAVEDMODEL_DIR = "savedmodel"


def limit_threads(intra: int = 2, inter: int = 1) -> None:
    """Keep TensorFlow to the machine's share of cores; a no-op once TF has started its pools."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass


@dataclass
class TrainConfig:
    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    patience: int = 6  # epochs without a better validation loss before stopping
    lr_patience: int = 2  # epochs without improvement before the learning rate is halved
    seed: int = 0
    steps_per_epoch: int | None = None  # cap (a random subset of batches each epoch)
    w_forecast: float = 1.0
    w_fault: float = 0.5
    w_insight: float = 0.5
    w_adjacency: float = 0.5  # where the true coupling is known (world): pull the similarity to it
    w_range: float = 1.0  # forecast-path activations beyond the int8-friendly range (arch.py)
    huber_delta: float = 0.25  # in units of each horizon's typical change (see target_scales)
    balance_sources: bool = True  # each data source weighs alike, its errors in its own scale
    # with balance_sources, a factor per source (in --data order) on its forecast and insight
    # weight; () = all 1 (train --source-weight)
    source_weights: tuple[float, ...] = ()
    faulted_forecast_weight: float = 0.3  # a faulted node's forecast target is noisy; weigh it less
    l2: float = 1e-5
    permute_slots: bool = True  # shuffle a site's nodes among its slots (slot ids carry no meaning)
    level_jitter: float = (
        0.5  # std of a random per-window offset added to the absolute t, rh inputs
    )
    # share of training windows in which one healthy board, or every healthy board of the site,
    # started reading partway through (features.late_start); 0 shows only full histories
    late_start: float = 0.15
    # fault-loss weight of a healthy node whose window climbs or falls steeply (a shower, the
    # oven; steep_nodes): such nodes are rare, and the committed model calls showers stuck
    steep_ok_weight: float = 1.0
    # each insight's yes and no windows weigh alike within each source in the insight loss
    # (train --balance-insight; balanced accuracy is the goal's measure, and the simulator's
    # sites are occupied in 93 % of windows, the UCI office in 21 %); needs balance_sources
    balance_insight: bool = False
    progress: bool = True


@dataclass
class TrainResult:
    savedmodel: Path
    best_epoch: int
    best_val: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


class _Adam:
    """Plain Adam on tf.Variables (Keras 3 optimizers expect Keras variables)."""

    def __init__(self, variables: list[tf.Variable], lr: float) -> None:
        self.vars = variables
        self.lr = tf.Variable(lr, trainable=False, dtype=tf.float32)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, grads: list[tf.Tensor]) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-7
        self.t.assign_add(1.0)
        lr = self.lr * tf.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        for var, g, m, v in zip(self.vars, grads, self.m, self.v, strict=True):
            g = tf.clip_by_norm(g, 5.0)
            m.assign(b1 * m + (1.0 - b1) * g)
            v.assign(b2 * v + (1.0 - b2) * g * g)
            var.assign_sub(lr * m / (tf.sqrt(v) + eps))

    def state(self) -> dict[str, np.ndarray]:
        d = {f"adam_m{i}": m.numpy() for i, m in enumerate(self.m)}
        d.update({f"adam_v{i}": v.numpy() for i, v in enumerate(self.v)})
        d["adam_t"] = np.array(self.t.numpy())
        d["adam_lr"] = np.array(self.lr.numpy())
        return d

    def load(self, d: dict[str, np.ndarray]) -> None:
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            m.assign(d[f"adam_m{i}"])
            v.assign(d[f"adam_v{i}"])
        self.t.assign(float(d["adam_t"]))
        if "adam_lr" in d:
            self.lr.assign(float(d["adam_lr"]))


def class_weights(w: Windows, n_classes: int) -> np.ndarray:
    """Inverse-sqrt-frequency weights of the fault classes (the ``ok`` class dominates)."""
    lab = w.y_fault[w.y_fault_mask > 0]
    counts = np.bincount(lab, minlength=n_classes).astype(np.float64)
    if counts.sum() == 0:
        return np.ones(n_classes, np.float32)
    freq = np.maximum(counts, 1.0) / counts.sum()
    wts = np.sqrt(1.0 / (n_classes * freq))
    return np.clip(wts / wts[0], 1.0, 10.0).astype(np.float32)


# the most one window's label may weigh in the insight loss with balance_insight: the simulator's
# sites are occupied 93 % of the time (7.1 uncapped) and its occupancy barely shows in the
# readings; a cap of 4 cost Room-Climate's occupancy on two seeds where 2 did not (BENCHMARKS.md)
INSIGHT_WEIGHT_CAP = 2.0


def insight_class_weights(w: Windows, cap: float = INSIGHT_WEIGHT_CAP) -> np.ndarray:
    """``[2, insights]``: the weights of a no (row 0) and a yes (row 1) label that make each
    class weigh half of the insight's labelled windows, each capped at ``cap``; 1 and 1 for an
    insight with one class only (or none) among the labelled windows."""
    lab = w.y_insight_mask > 0
    yes = (w.y_insight > 0.5) & lab
    n = lab.sum(axis=0).astype(np.float64)
    n_yes = yes.sum(axis=0).astype(np.float64)
    n_no = n - n_yes
    out = np.ones((2, w.y_insight.shape[1]), np.float32)
    ok = (n_yes > 0) & (n_no > 0)
    out[0, ok] = np.minimum(n[ok] / (2.0 * n_no[ok]), cap)
    out[1, ok] = np.minimum(n[ok] / (2.0 * n_yes[ok]), cap)
    return out


def target_scales(w: Windows) -> np.ndarray:
    """Mean absolute change per (horizon, target) on healthy nodes, ``[K, 2]``: the forecast loss
    divides by it so the +5 min horizon (changes of a few hundredths of a degree) counts as much
    as +30 min instead of drowning in it."""
    healthy = (w.y_fault_mask == 0) | (w.y_fault == 0)
    m = (w.y_forecast_mask > 0) & healthy[..., None]  # [W, N, K]
    out = np.ones(w.y_forecast.shape[2:], np.float32)
    for k in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = np.abs(w.y_forecast[:, :, k, j][m[:, :, k]])
            if len(v):
                out[k, j] = max(float(np.mean(v)), 1e-3)
    return out


class SourceBalance:
    """Per-window loss scales and weights from the window's data source (``Windows.source``).

    The world simulator's rooms change five times faster than Room-Climate's (mean |change| at
    +5 min: 0.16 °C against 0.03 °C) and give most of the windows; one forecast scale for all
    would leave the real rooms' errors a rounding error of the loss. Each source's forecast errors
    are therefore divided by that source's own typical change, and each source's windows weigh
    alike in total in the forecast and insight losses (weights average 1 over the training set).
    The fault loss keeps every window alike: weighing UCI's one office sensor like a whole
    simulated site made its false alarms set the fault rule (docs/model.md). With
    ``insight_batch`` each source's insight labels can also weigh their two classes alike
    (``TrainConfig.balance_insight``). ``factors`` (one
    per source id, ``train --source-weight``) then tilt that balance; weighing Room-Climate
    twice was tried on five seeds and dropped (docs/BENCHMARKS.md)."""

    def __init__(self, w: Windows, enabled: bool = True, factors: Sequence[float] = ()) -> None:
        self.global_scale = target_scales(w)
        src = getattr(w, "source", None)
        self.scales: dict[int, np.ndarray] = {}
        self.weights: dict[int, float] = {}
        # per source: the insight loss's weight of a yes and of a no window, [2, insights]
        self.insight_w: dict[int, np.ndarray] = {}
        if not enabled or src is None:
            return
        ids, counts = np.unique(src, return_counts=True)
        for s, c in zip(ids, counts, strict=True):
            self.scales[int(s)] = target_scales(w.take(src == s))
            self.insight_w[int(s)] = insight_class_weights(w.take(src == s))
            factor = float(factors[int(s)]) if int(s) < len(factors) else 1.0
            self.weights[int(s)] = float(len(w) / (len(ids) * c)) * factor

    def batch(self, w: Windows, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(fscale [B, K, 2], weight [B])`` for the windows ``idx`` of ``w``."""
        src = getattr(w, "source", None)
        scale = np.broadcast_to(self.global_scale, (len(idx), *self.global_scale.shape)).copy()
        weight = np.ones(len(idx), np.float32)
        if src is not None:
            of = src[idx]
            for s, s_scale in self.scales.items():
                scale[of == s] = s_scale
                weight[of == s] = self.weights[s]
        return scale.astype(np.float32), weight

    def insight_batch(self, w: Windows, idx: np.ndarray) -> np.ndarray:
        """``[B, insights]``: each window's insight-loss weight for its own label, so that
        yes and no weigh alike within its source (1 where the source is unknown)."""
        y = w.y_insight[idx] > 0.5
        out = np.ones(y.shape, np.float32)
        src = getattr(w, "source", None)
        if src is None:
            return out
        of = src[idx]
        for s, cw in self.insight_w.items():
            rows = of == s
            out[rows] = np.where(y[rows], cw[1], cw[0])
        return out


def _losses(
    out: dict[str, tf.Tensor],
    batch: dict[str, tf.Tensor],
    cfg: TrainConfig,
    cw: tf.Tensor,
) -> dict[str, tf.Tensor]:
    eps = 1e-6
    ww = batch["weight"][:, None]  # [B, 1] the window's source weight
    faulted = tf.cast(batch["y_fault"] > 0, tf.float32) * batch["y_fault_mask"]
    node_w = (1.0 - (1.0 - cfg.faulted_forecast_weight) * faulted) * ww  # [B, N]
    fm = (batch["y_forecast_mask"] * node_w[..., None])[..., None]
    err = (out["change"] - batch["y_forecast"]) / batch["fscale"][:, None]
    a = tf.abs(err)
    d = cfg.huber_delta
    hub = tf.where(a <= d, 0.5 * err * err, d * (a - 0.5 * d))
    l_fc = tf.reduce_sum(hub * fm) / (2.0 * tf.reduce_sum(fm) + eps)
    ym = batch["y_fault_mask"]  # faults: every window alike (the fault rule is tuned per source)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=batch["y_fault"], logits=out["fault_logits"]
    )
    wts = tf.gather(cw, batch["y_fault"]) * ym * batch["fault_w"]
    l_fault = tf.reduce_sum(ce * wts) / (tf.reduce_sum(wts) + eps)
    im = batch["y_insight_mask"] * ww * batch["insight_w"]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=batch["y_insight"], logits=out["insight_logits"]
    )
    l_ins = tf.reduce_sum(bce * im) / (tf.reduce_sum(im) + eps)
    # adjacency: logistic loss of the pre-softmax similarity against the true coupling, over the
    # pairs the model may connect, in windows whose recording has a known graph
    am = (
        batch["adj_known"][:, None, None]
        * batch["node_mask"][:, :, None]
        * batch["node_mask"][:, None, :]
    )
    am = am * (1.0 - tf.eye(tf.shape(am)[1]))[None]
    bce_a = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=batch["adj_true"], logits=out["adjacency_logits"]
    )
    l_adj = tf.reduce_sum(bce_a * am) / (tf.reduce_sum(am) + eps)
    l_range = out["range_excess"]
    total = (
        cfg.w_forecast * l_fc
        + cfg.w_fault * l_fault
        + cfg.w_insight * l_ins
        + cfg.w_adjacency * l_adj
        + cfg.w_range * l_range
    )
    return {
        "loss": total,
        "forecast": l_fc,
        "fault": l_fault,
        "insight": l_ins,
        "adjacency": l_adj,
        "range": l_range,
    }


_KEYS = (
    "x",
    "node_mask",
    "y_forecast",
    "y_forecast_mask",
    "y_fault",
    "y_fault_mask",
    "y_insight",
    "y_insight_mask",
)


def _batch(
    w: Windows,
    idx: np.ndarray,
    rng: np.random.Generator | None,
    balance: SourceBalance,
    level_cols: tuple[int, ...] = (),
    level_jitter: float = 0.0,
    permute: bool = True,
    input_clip: float | None = None,
    late: float = 0.0,
    card: ModelCard | None = None,
    steep_ok_weight: float = 1.0,
    balance_insight: bool = False,
) -> dict[str, np.ndarray]:
    b = {k: getattr(w, k)[idx] for k in _KEYS}
    b["fscale"], b["weight"] = balance.batch(w, idx)
    b["insight_w"] = (
        balance.insight_batch(w, idx)
        if balance_insight
        else np.ones(b["y_insight"].shape, np.float32)
    )
    n_slots = b["node_mask"].shape[1]
    if rng is not None and late > 0 and card is not None:
        # A board that rebooted, or a site installed a few minutes ago, has a short history; a
        # model trained on full windows alone called such boards "drift" (docs/model.md). Only
        # healthy boards start late: a fault needs the history that shows it.
        for r in range(len(idx)):
            if rng.random() >= late:
                continue
            healthy = (b["node_mask"][r] > 0) & (
                (b["y_fault"][r] == 0) | (b["y_fault_mask"][r] == 0)
            )
            nodes = np.flatnonzero(healthy)
            if not len(nodes):
                continue
            if rng.random() >= 1 / 3:  # one board rebooted; else the whole site started
                nodes = nodes[rng.integers(len(nodes)) :][:1]
            late_start(b["x"][r], nodes.tolist(), int(rng.integers(1, card.history - 1)), card)
    # optional true coupling per window (set by the caller as w.adj_true [W, N, N] uint8)
    adj = getattr(w, "adj_true", None)
    if adj is not None:
        b["adj_true"] = adj[idx].astype(np.float32)
        b["adj_known"] = (adj[idx].reshape(len(idx), -1).max(axis=1) > 0).astype(np.float32)
    else:
        b["adj_true"] = np.zeros((len(idx), n_slots, n_slots), np.float32)
        b["adj_known"] = np.zeros(len(idx), np.float32)
    if rng is not None and level_jitter > 0 and level_cols:
        # Absolute levels differ from site to site (an office at 22 °C / 30 %RH, a bathroom at
        # 25 °C / 70 %RH); a random offset per window keeps the model from keying on one training
        # site's level. One offset for all nodes of the window: the differences between nodes
        # (sensors in one room read alike) are what the adjacency learns from.
        shift = rng.normal(0.0, level_jitter, size=(len(idx), 1, 1, len(level_cols)))
        live = b["node_mask"][:, :, None, None] > 0
        # shift the level itself, then clip it again as the host would
        cols = soft_unclip(b["x"][..., list(level_cols)], input_clip)
        cols = soft_clip(cols + np.where(live, shift, 0.0), input_clip)
        b["x"][..., list(level_cols)] = cols.astype(np.float32)
    if rng is not None and permute:
        # Nodes sit in slots 0..n-1 in the gateway's order; shuffling them within that prefix
        # keeps the per-slot embeddings from learning one training site's layout.
        for r in range(len(idx)):
            used = np.flatnonzero(b["node_mask"][r] > 0)
            n_used = int(used[-1]) + 1 if len(used) else 0
            if n_used < 2:
                continue
            perm = np.concatenate([rng.permutation(n_used), np.arange(n_used, n_slots)])
            for k in ("x", "node_mask", "y_forecast", "y_forecast_mask", "y_fault", "y_fault_mask"):
                b[k][r] = b[k][r][perm]
            b["adj_true"][r] = b["adj_true"][r][perm][:, perm]
    b["y_fault"] = b["y_fault"].astype(np.int64)
    b["fault_w"] = np.ones(b["y_fault"].shape, np.float32)
    if steep_ok_weight != 1.0 and card is not None:
        steep = steep_nodes(b["x"], card) & (b["y_fault"] == 0)
        b["fault_w"][steep] = steep_ok_weight
    return b


def _check_windows(w: Windows, card: ModelCard, what: str) -> None:
    if len(w) == 0:
        raise ModelError(f"{what}: no windows; give more or longer recordings")
    want = (card.nodes, card.history, len(card.features))
    if tuple(w.x.shape[1:]) != want:
        raise ModelError(f"{what}: windows have shape {w.x.shape[1:]}, the card wants {want}")


def train(
    train_w: Windows | Callable[[int], Windows],
    val_w: Windows,
    card: ModelCard,
    out_dir: Path | str,
    cfg: TrainConfig | None = None,
    *,
    arch: ArchConfig | None = None,
    init: Path | str | None = None,
    info: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or fine-tune from ``init``, a SavedModel of :func:`save_model`) and export the best
    epoch to ``<out_dir>/savedmodel``. Resumes from ``<out_dir>/checkpoint`` when it exists.

    ``train_w`` may be a function of the epoch number (1, 2, ...) returning that epoch's windows,
    so that injected faults are drawn afresh each epoch instead of being memorized."""
    cfg = cfg or TrainConfig()
    echo = echo or log.info
    make_epoch = train_w if callable(train_w) else None
    if make_epoch is not None:
        train_w = make_epoch(1)
    assert isinstance(train_w, Windows)
    _check_windows(train_w, card, "training set")
    _check_windows(val_w, card, "validation set")
    limit_threads()
    out = Path(out_dir)
    ck = out / CHECKPOINT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    tf.random.set_seed(cfg.seed)

    if init is not None:
        base = load_model(init)
        if base.card.input_shapes != card.input_shapes:
            raise ModelError(
                f"--init {init}: its inputs {base.card.input_shapes} differ from the data's card "
                f"{card.input_shapes}"
            )
        model = SiteModel(card, base.arch, seed=cfg.seed)
        model.set_weights(base.get_weights())
        echo(f"fine-tuning from {init}")
    else:
        model = SiteModel(card, arch, seed=cfg.seed)
    opt = _Adam(model.weight_list, cfg.lr)
    cw = tf.constant(class_weights(train_w, len(card.fault_classes)))
    balance = SourceBalance(train_w, cfg.balance_sources, cfg.source_weights)

    state: dict[str, Any] = {"epoch": 0, "best_val": None, "best_epoch": 0, "bad": 0, "history": []}
    state_file = ck / "state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        with np.load(ck / "last.npz") as d:
            arrays = {k: d[k] for k in d.files}
        model.set_weights({k: v for k, v in arrays.items() if not k.startswith("adam_")})
        opt.load(arrays)
        echo(f"resuming from {ck} after epoch {state['epoch']}")

    specs = {
        "x": tf.TensorSpec([None, *train_w.x.shape[1:]], tf.float32),
        "node_mask": tf.TensorSpec([None, card.nodes], tf.float32),
        "y_forecast": tf.TensorSpec([None, *train_w.y_forecast.shape[1:]], tf.float32),
        "y_forecast_mask": tf.TensorSpec([None, *train_w.y_forecast_mask.shape[1:]], tf.float32),
        "y_fault": tf.TensorSpec([None, card.nodes], tf.int64),
        "y_fault_mask": tf.TensorSpec([None, card.nodes], tf.float32),
        "y_insight": tf.TensorSpec([None, len(card.insights)], tf.float32),
        "y_insight_mask": tf.TensorSpec([None, len(card.insights)], tf.float32),
        "adj_true": tf.TensorSpec([None, card.nodes, card.nodes], tf.float32),
        "adj_known": tf.TensorSpec([None], tf.float32),
        "fscale": tf.TensorSpec([None, *train_w.y_forecast.shape[2:]], tf.float32),
        "weight": tf.TensorSpec([None], tf.float32),
        "fault_w": tf.TensorSpec([None, card.nodes], tf.float32),
        "insight_w": tf.TensorSpec([None, len(card.insights)], tf.float32),
    }

    @tf.function(input_signature=[specs])
    def step(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            out_ = model.forward(batch["x"], batch["node_mask"])
            losses = _losses(out_, batch, cfg, cw)
            l2 = tf.add_n([tf.reduce_sum(v * v) for v in model.weight_list if len(v.shape) == 2])
            total = losses["loss"] + cfg.l2 * l2
        grads = tape.gradient(total, model.weight_list)
        grads = [
            tf.zeros_like(v) if g is None else g
            for g, v in zip(grads, model.weight_list, strict=True)
        ]
        opt.apply(grads)
        return losses

    @tf.function(input_signature=[specs])
    def evaluate(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return _losses(model.forward(batch["x"], batch["node_mask"]), batch, cfg, cw)

    def validate() -> dict[str, float]:
        sums: dict[str, float] = {}
        n = len(val_w)
        for s in range(0, n, 128):
            idx = np.arange(s, min(n, s + 128))
            res = evaluate(
                _batch(
                    val_w,
                    idx,
                    None,
                    balance,
                    card=card,
                    steep_ok_weight=cfg.steep_ok_weight,
                    balance_insight=cfg.balance_insight,
                )
            )
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        return {f"val_{k}": v / n for k, v in sums.items()}

    try:
        from tqdm import tqdm
    except ImportError:  # the [train] extra brings tqdm; without it, no bar
        tqdm = None

    level_cols = tuple(card.features.index(c) for c in ("t", "rh") if c in card.features)
    stopped = False
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        if make_epoch is not None and epoch > 1:
            train_w = make_epoch(epoch)  # its size need not be the first epoch's
        n_batches = int(np.ceil(len(train_w) / cfg.batch))
        if cfg.steps_per_epoch:
            n_batches = min(n_batches, cfg.steps_per_epoch)
        rng = np.random.default_rng([cfg.seed, epoch])  # same shuffles after a resume
        order = rng.permutation(len(train_w))
        t0 = time.monotonic()
        sums: dict[str, float] = {}
        batches = range(n_batches)
        bar = None
        if cfg.progress and tqdm is not None:
            bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
            batches = bar
        for bi in batches:
            idx = np.sort(order[bi * cfg.batch : (bi + 1) * cfg.batch])
            batch = _batch(
                train_w,
                idx,
                rng,
                balance,
                level_cols,
                cfg.level_jitter,
                cfg.permute_slots,
                card.input_clip,
                cfg.late_start,
                card,
                cfg.steep_ok_weight,
                cfg.balance_insight,
            )
            res = step(batch)
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None and bi % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / (bi + 1):.4f}")
        if bar is not None:
            bar.close()
        row = {f"train_{k}": v / n_batches for k, v in sums.items()}
        row.update(validate())
        row["epoch"] = epoch
        row["seconds"] = round(time.monotonic() - t0, 2)
        state["history"].append(row)
        val = row["val_loss"]
        improved = state["best_val"] is None or val < state["best_val"] - 1e-5
        if improved:
            state["best_val"], state["best_epoch"], state["bad"] = val, epoch, 0
            np.savez(ck / "best.npz", **model.get_weights())
        else:
            state["bad"] += 1
            if state["bad"] % cfg.lr_patience == 0:
                opt.lr.assign(opt.lr * 0.5)
                echo(f"learning rate halved to {float(opt.lr.numpy()):.2e}")
        state["epoch"] = epoch
        np.savez(ck / "last.npz", **model.get_weights(), **opt.state())
        state_file.write_text(json.dumps(state, indent=1) + "\n")
        echo(
            f"epoch {epoch}: train {row['train_loss']:.4f}  val {val:.4f} "
            f"(forecast {row['val_forecast']:.4f}, fault {row['val_fault']:.4f}, "
            f"insight {row['val_insight']:.4f}, adjacency {row['val_adjacency']:.4f}, "
            f"range {row['val_range']:.4f})"
            f"{'  *best' if improved else ''}  {row['seconds']}s"
        )
        if state["bad"] >= cfg.patience:
            echo(f"early stop: no better validation loss for {cfg.patience} epochs")
            stopped = True
            break

    with np.load(ck / "best.npz") as d:
        model.set_weights({k: d[k] for k in d.files})
    trained = ModelCard(**{k: getattr(card, k) for k in card.__dataclass_fields__})
    trained.training = {
        **(info or {}),
        "config": asdict(cfg),
        "arch": asdict(model.arch),
        "init": str(init) if init else None,
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"],
        "epochs_run": state["epoch"],
        "train_windows_per_epoch": len(train_w),
        "val_windows": len(val_w),
        "history": state["history"],
    }
    saved = save_model(model, out / SAVEDMODEL_DIR, trained)
    return TrainResult(
        savedmodel=saved,
        best_epoch=int(state["best_epoch"]),
        best_val=float(state["best_val"]),
        epochs_run=int(state["epoch"]),
        history=state["history"],
        stopped_early=stopped,
    )
