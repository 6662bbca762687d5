"""The site reasoning model: an adaptive graph over up to 64 node slots (TensorFlow, training side).

One forward pass sees a whole site window ``x [B, nodes, history, F]`` and ``node_mask [B, nodes]``:

1. *multi-granularity temporal encoders*: the last 8 steps at full resolution, the whole window
   mean-pooled by 4 and by 16, each through its own dense layer; a per-node softmax gate fuses them.
   A roughness summary (mean absolute step-to-step change of dt and drh, the share of steps
   that repeat the last one exactly, the mean and peak range of reads within a step) rides along:
   stuck, noisy and spiky sensors differ mostly there.
2. *adaptive adjacency*: ``softmax(sim + relu(E·Eᵀ))`` over the other real nodes, where ``sim`` is a
   scaled dot product of queries and tanh-bounded keys computed from each node's state and
   recent changes (feature similarity: it generalizes across sites) and ``E`` a small per-slot
   embedding (it can only learn a site's layout when fine-tuned on that site). Sparsified by a threshold and masked: padding,
   the diagonal and entries under ``threshold`` are exactly 0.
   ``ArchConfig.adjacency = "sigmoid"`` (``train --adjacency sigmoid``, not the default) takes
   each entry's own sigmoid instead and sums the neighbours' messages: no int8 SOFTMAX outside
   XNNPACK, but lone boards read once a minute get called drifting (docs/BENCHMARKS.md).
3. *router*: per node a softmax over (own history, neighbour aggregation) mixes two forecast paths,
   so a node whose own history looks wrong is forecast from its neighbours.
4. heads: forecast (normalized change per horizon), fault class, site insights.

Every op is chosen to have an INT8 TFLite kernel (FULLY_CONNECTED, BATCH_MATMUL, MEAN, SOFTMAX,
LOGISTIC, ADD/SUB/MUL, RELU, MAXIMUM/MINIMUM, REDUCE_MAX, RESHAPE, STRIDED_SLICE, CONCATENATION);
``quantize`` refuses a model where any op stays float. Inputs are soft-clipped to ±``clip_in`` (on
the host, ``ModelCard.input_clip``, so float and int8 see the same values; inside the model for
older cards) and the forecast to ±``clip_out`` inside the model, so that the int8 scales cover
the useful range rather than a rare spike.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from ..errors import ModelError  # noqa: E402
from .card import ModelCard  # noqa: E402

__all__ = ["ArchConfig", "SiteModel", "load_model", "save_model"]

ARCH_FILE = "humigraph-arch.json"
WEIGHTS_FILE = "humigraph-weights.npz"
CARD_FILE = "humigraph-card.json"
ADJACENCY_KINDS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ArchConfig:
    hidden: int = 48  # node state width
    key: int = 16  # similarity key width
    message: int = 16  # width of what a node passes to its neighbours (adjacency @ message)
    range_limit: float = 1.5  # forecast-path activations past ±range_limit*clip_out are penalized
    embed: int = 8  # per-slot embedding width
    fine_steps: int = 8  # full-resolution tail seen by the fine encoder
    pools: tuple[int, ...] = (4, 16)  # mean-pool factors of the coarser encoders
    threshold: float = 0.05  # adjacency entries below this are cut to 0
    # how a row of logits becomes weights: "softmax" (a distribution over the neighbours) or
    # "sigmoid" (each pair on its own: the probability that the two are coupled, summed over the
    # neighbours); int8 SOFTMAX runs outside XNNPACK, int8 LOGISTIC inside
    adjacency: str = "softmax"
    mask_logit: float = 8.0  # logit pushed down for forbidden neighbours (kept small for int8)
    clip_in: float = 4.0
    clip_out: float = 2.0  # normalized change; int8 step = 2*clip_out/255

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArchConfig:
        d = dict(d)
        if "pools" in d:
            d["pools"] = tuple(d["pools"])
        return cls(**d)


class SiteModel(tf.Module):
    """Variables plus the forward pass; ``serve`` is the fixed-shape signature TFLite converts."""

    def __init__(self, card: ModelCard, arch: ArchConfig | None = None, seed: int = 0) -> None:
        super().__init__(name="humigraph")
        self.card = card
        self.arch = arch = arch or ArchConfig()
        n, h, f = card.nodes, card.history, len(card.features)
        for p in arch.pools:
            if h % p:
                raise ModelError(f"history {h} is not divisible by pool factor {p}")
        if tuple(card.features[:4]) != ("t", "rh", "dt", "drh"):
            raise ModelError(
                f"features {list(card.features)}: the first four must be t, rh, dt, drh"
            )
        if arch.adjacency not in ADJACENCY_KINDS:
            raise ModelError(
                f"adjacency {arch.adjacency!r}: use one of {', '.join(ADJACENCY_KINDS)}"
            )
        if arch.fine_steps > h:
            raise ModelError(f"fine_steps {arch.fine_steps} exceeds history {h}")
        k, c, i = len(card.horizons_s), len(card.fault_classes), len(card.insights)
        hd, kd = arch.hidden, arch.key
        rng = np.random.default_rng(seed)
        self._names: list[str] = []

        def dense(name: str, n_in: int, n_out: int, bias: float = 0.0) -> None:
            w = rng.normal(0.0, np.sqrt(2.0 / (n_in + n_out)), size=(n_in, n_out))
            self._add(f"{name}_w", w)
            self._add(f"{name}_b", np.full((n_out,), bias))

        # see forward(): roughness (+ stillness, + the mean and peak spread of reads, + how full
        # the steps are)
        rough = 2 + ("still" in card.features) + 2 * ("spread" in card.features)
        rough += "reads" in card.features
        self.enc_sizes = [arch.fine_steps * f] + [(h // p) * f for p in arch.pools]
        for j, size in enumerate(self.enc_sizes):
            dense(f"enc{j}", size, hd)
        dense("gate", hd * len(self.enc_sizes), len(self.enc_sizes))
        dense("state", hd + rough, hd)
        mid = (h // arch.pools[0]) * 2
        dense("query", hd + mid, kd)
        dense("keyp", hd + mid, kd)
        self._add("embed", rng.normal(0.0, 0.1, size=(n, arch.embed)))
        md = arch.message
        dense("message", hd, md)
        dense("router", hd + md + rough, 2)
        dense("own1", hd, hd)
        dense("own2", hd, k * 2)
        dense(
            "trend", arch.fine_steps * f, k * 2
        )  # linear skip: a trend forecast is one layer away
        dense("nb1", md, hd)
        dense("nb2", hd, k * 2)
        # sigmoid adjacency: the fault head also sees how strongly a node is tied to the others
        # and whether there are others at all (see forward())
        dense("fault1", hd + md + rough + 2 * (arch.adjacency == "sigmoid"), hd)
        dense("fault2", hd, c)
        dense("ins1", 2 * hd + 1 + 2 * mid, hd)
        dense("ins2", hd, i)

    def _add(self, name: str, value: np.ndarray) -> None:
        setattr(self, name, tf.Variable(np.asarray(value, np.float32), name=name))
        self._names.append(name)

    # -- weights as plain arrays (checkpoints, --init, tests) -------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).numpy() for k in self._names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for k in self._names:
            if k not in weights:
                raise ModelError(
                    f"weights lack {k!r}: the model was built with another architecture"
                )
            v = getattr(self, k)
            if tuple(v.shape) != tuple(weights[k].shape):
                raise ModelError(
                    f"weight {k!r} has shape {tuple(weights[k].shape)}, this model wants "
                    f"{tuple(v.shape)} (another card or architecture)"
                )
            v.assign(weights[k])

    @property
    def weight_list(self) -> list[tf.Variable]:
        return [getattr(self, k) for k in self._names]

    # -- forward ----------------------------------------------------------------------------------
    def _dense(self, name: str, a: tf.Tensor) -> tf.Tensor:
        """``a [..., n_in] -> [..., n_out]`` through a 2-D matmul (a FULLY_CONNECTED in TFLite)."""
        w, b = getattr(self, f"{name}_w"), getattr(self, f"{name}_b")
        shape = tf.shape(a)
        flat = tf.reshape(a, [-1, w.shape[0]])
        out = tf.matmul(flat, w) + b
        return tf.reshape(out, tf.concat([shape[:-1], [w.shape[1]]], axis=0))

    def forward(
        self,
        x: tf.Tensor,
        node_mask: tf.Tensor,
        own_only: bool = False,
        shifted: np.ndarray | None = None,
    ) -> dict[str, tf.Tensor]:
        """The outputs plus the logits the losses need; ``own_only`` pins the router to the
        node's own history (the ablation "without the router" in the model card); ``shifted``
        (export, :meth:`shifted_static`) is the weights-only adjacency term as one constant."""
        card, arch = self.card, self.arch
        n, h, f = card.nodes, card.history, len(card.features)
        k = len(card.horizons_s)
        if card.input_clip is None:  # older cards: the host does not clip (features.encode)
            # soft clip (linear near 0): TANH runs in XNNPACK's int8 path, MINIMUM/MAXIMUM not
            x = arch.clip_in * tf.tanh(x * (1.0 / arch.clip_in))
        m = node_mask[:, :, None]  # [B, N, 1]

        # 1. temporal encoders at several granularities, fused by a per-node gate
        views = [tf.reshape(x[:, :, h - arch.fine_steps :, :], [-1, n, arch.fine_steps * f])]
        pooled_first = None
        # pooling as a MEAN over a reshaped axis: XNNPACK runs int8 MEAN (and REDUCE_MAX), where
        # int8 AVERAGE_POOL_2D falls back to TFLite's own kernel and splits the delegated graph
        for p in arch.pools:
            pooled = tf.reduce_mean(tf.reshape(x, [-1, n, h // p, p, f]), axis=3)
            if pooled_first is None:
                pooled_first = pooled
            views.append(tf.reshape(pooled, [-1, n, (h // p) * f]))
        encs = [tf.nn.relu(self._dense(f"enc{j}", v)) for j, v in enumerate(views)]
        gate = tf.sigmoid(self._dense("gate", tf.concat(encs, axis=-1)))  # one gate per scale
        fused = encs[0] * gate[:, :, 0:1]
        for j in range(1, len(encs)):
            fused = fused + encs[j] * gate[:, :, j : j + 1]
        # Roughness from dt and drh only: their steps are t's and rh's in a 10x finer scale, and
        # the summary's columns share one int8 scale, so each column should span about as much
        # as the others (t's own steps, next to a spread of 4, would round to 0).
        steps = x[:, :, 1:, 2:4] - x[:, :, :-1, 2:4]
        back = x[:, :, :-1, 2:4] - x[:, :, 1:, 2:4]
        # |step| as relu(step) + relu(-step), the negation as a swapped SUB: int8 has no NEG/ABS
        # kernel that XNNPACK takes
        absolute = tf.nn.relu(steps) + tf.nn.relu(back)
        summary = [tf.reduce_mean(absolute, axis=2)]  # mean |step change| of dt, drh
        if "still" in card.features:
            # the share of steps that repeat the last one exactly: a stuck sensor's signature
            s = card.features.index("still")
            summary.append(tf.reduce_mean(x[:, :, :, s : s + 1], axis=2))
        if "spread" in card.features:
            # spikes widen a few steps' range of reads, noise every step's: mean and peak differ
            s = card.features.index("spread")
            col = x[:, :, :, s : s + 1]
            summary += [tf.reduce_mean(col, axis=2), tf.reduce_max(col, axis=2)]
        if "reads" in card.features:
            # how full the steps are: with one read a step, no spread is no sign of a stuck sensor
            s = card.features.index("reads")
            summary.append(tf.reduce_mean(x[:, :, :, s : s + 1], axis=2))
        rough = summary[0] if len(summary) == 1 else tf.concat(summary, axis=-1)
        state = tf.nn.relu(self._dense("state", tf.concat([fused, rough], axis=-1))) * m

        # 2. adaptive adjacency: feature similarity + per-slot embeddings, masked and thresholded
        changes = tf.reshape(pooled_first[:, :, :, 2:4], [-1, n, (h // arch.pools[0]) * 2])
        kin = tf.concat([state, changes], axis=-1)
        q = self._dense("query", kin)
        # keys through TANH: its int8 output is fixed at zero point 0, and XNNPACK runs an int8
        # BATCH_MATMUL only when the second operand is symmetric like that (else TFLite's own
        # kernel runs it, outside the delegated graph)
        kk = tf.tanh(self._dense("keyp", kin))
        sim = tf.matmul(q, kk, transpose_b=True) * (1.0 / float(np.sqrt(arch.key)))
        if shifted is None:
            static = tf.nn.relu(tf.matmul(self.embed, self.embed, transpose_b=True))
            shifted_t = static + arch.mask_logit
        else:  # one constant: TFLite would otherwise add two constants at run time
            shifted_t = tf.constant(shifted, tf.float32)
        not_self = tf.constant(1.0 - np.eye(n, dtype=np.float32))
        allowed = node_mask[:, None, :] * not_self[None]  # [B, N, N]
        # (sim + static) * allowed - mask_logit * (1 - allowed), with the constants gathered into
        # one term: the embeddings' product alone can be ~1e-5 (slots are shuffled in training,
        # so it learns a layout only when fine-tuned), and int8 ADD of two tensors whose scales
        # are 1000x apart leaves XNNPACK for TFLite's slower kernel
        logits = (sim + shifted_t[None]) * allowed - arch.mask_logit
        sigmoid = arch.adjacency == "sigmoid"
        prob = tf.sigmoid(logits) if sigmoid else tf.nn.softmax(logits, axis=-1)
        adjacency = tf.nn.relu(prob - arch.threshold) * allowed * m

        # 3. router: own history vs neighbour aggregation
        # neighbours pass a narrow message, not their whole state: int8 BATCH_MATMUL runs outside
        # XNNPACK, and 64x64x16 costs a third of 64x64x48
        message = self._dense("message", state)  # [B, N, message]
        agg = tf.matmul(adjacency, message)  # [B, N, message]
        # a two-way softmax is a sigmoid of the logit difference (LOGISTIC stays in XNNPACK)
        rl = self._dense("router", tf.concat([state, agg, rough], axis=-1))
        router = tf.sigmoid(
            tf.concat([rl[:, :, 0:1] - rl[:, :, 1:2], rl[:, :, 1:2] - rl[:, :, 0:1]], axis=-1)
        )
        if own_only:
            router = tf.concat(
                [tf.ones_like(router[:, :, 0:1]), tf.zeros_like(router[:, :, 0:1])], -1
            )
        own_mlp = self._dense("own2", tf.nn.relu(self._dense("own1", state)))
        trend = self._dense("trend", views[0])
        own = own_mlp + trend
        nb = self._dense("nb2", tf.nn.relu(self._dense("nb1", agg)))
        mixed = own * router[:, :, 0:1] + nb * router[:, :, 1:2]
        forecast = arch.clip_out * tf.tanh(mixed * (1.0 / arch.clip_out)) * m
        # Each of these is one int8 tensor whose calibrated min/max sets its step. Unchecked, a
        # faulted node's "undo the spike" pushes them to ±15 while the output spans ±clip_out,
        # and the +5 min forecast drowns in their rounding; training penalizes the excess.
        limit = arch.range_limit * arch.clip_out
        range_excess = tf.add_n(
            [
                tf.reduce_mean(tf.square(tf.nn.relu(tf.abs(a) - limit)))
                for a in (own_mlp, trend, own, nb, mixed)
            ]
        )
        forecast = tf.reshape(forecast, [-1, n, k, 2])
        c = card.forecast_compand
        change = forecast if not c else c["knee"] * tf.sinh(forecast * (1.0 / c["gain"]))

        # 4. heads
        parts = [state, message - agg, rough]  # how it differs from them
        if sigmoid:
            # Summed over independent pairs, a node the model finds unlike every other gets a
            # lone board's aggregate (0), as a drifting node might; its total tie and "any other
            # board present" let the head tell the two apart (it did not cure the lone ESP32
            # board's drift calls: docs/BENCHMARKS.md).
            tie = tf.reduce_mean(adjacency, axis=-1, keepdims=True)
            others = tf.reduce_max(allowed, axis=-1, keepdims=True) * m
            parts += [tie, others]
        fault_in = tf.concat(parts, axis=-1)
        fault_logits = self._dense("fault2", tf.nn.relu(self._dense("fault1", fault_in)))
        present = tf.reduce_mean(node_mask, axis=1, keepdims=True)  # [B, 1]
        # the site's recent t and rh changes (mean and extreme over its nodes), as the GBT
        # baseline sees them: people show as humidity rising in several rooms at once
        site = tf.concat(
            [
                tf.reduce_max(state, axis=1),
                tf.reduce_mean(state, axis=1),
                present,
                tf.reduce_mean(changes, axis=1),
                tf.reduce_max(changes, axis=1),
            ],
            axis=-1,
        )
        insight_logits = self._dense("ins2", tf.nn.relu(self._dense("ins1", site)))
        return {
            "forecast": forecast,
            "change": change,  # the forecast in target scales, what the losses compare
            "fault_logits": fault_logits,
            "insight_logits": insight_logits,
            "fault": tf.nn.softmax(fault_logits, axis=-1),
            "insight": tf.sigmoid(insight_logits),
            "adjacency": adjacency,
            "adjacency_logits": logits,
            "router": router,
            "range_excess": range_excess,
        }

    def shifted_static(self) -> np.ndarray:
        """``relu(E·Eᵀ) + mask_logit`` from the current weights (eager), for export."""
        e = self.embed.numpy()
        return (np.maximum(e @ e.T, 0.0) + self.arch.mask_logit).astype(np.float32)

    def serving_function(self) -> Any:
        card = self.card
        shapes = card.input_shapes
        shifted = self.shifted_static()

        @tf.function(
            input_signature=[
                tf.TensorSpec(shapes["x"], tf.float32, name="x"),
                tf.TensorSpec(shapes["node_mask"], tf.float32, name="node_mask"),
            ]
        )
        def serve(x: tf.Tensor, node_mask: tf.Tensor) -> dict[str, tf.Tensor]:
            out = self.forward(x, node_mask, shifted=shifted)
            return {
                name: out[name] for name in ("forecast", "fault", "insight", "adjacency", "router")
            }

        return serve


def save_model(model: SiteModel, path: Path | str, card: ModelCard | None = None) -> Path:
    """A SavedModel (``serving_default`` = the fixed-shape signature) plus the arch, weights and card
    beside its variables, so ``--init`` and ``quantize`` can rebuild the exact module."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    serve = model.serving_function()
    tf.saved_model.save(model, str(path), signatures={"serving_default": serve})
    (path / ARCH_FILE).write_text(json.dumps(asdict(model.arch), indent=2) + "\n")
    np.savez(path / WEIGHTS_FILE, **model.get_weights())
    (card or model.card).save(path / CARD_FILE)
    return path


def load_model(path: Path | str) -> SiteModel:
    """Rebuild a :class:`SiteModel` from a SavedModel directory written by :func:`save_model`."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such SavedModel directory (humigraph train writes one)")
    for name in (ARCH_FILE, WEIGHTS_FILE, CARD_FILE):
        if not (path / name).is_file():
            raise ModelError(f"{path}: {name} missing; not a SavedModel written by humigraph train")
    card = ModelCard.from_json(
        json.loads((path / CARD_FILE).read_text()), where=str(path / CARD_FILE)
    )
    arch = ArchConfig.from_json(json.loads((path / ARCH_FILE).read_text()))
    model = SiteModel(card, arch)
    with np.load(path / WEIGHTS_FILE) as w:
        model.set_weights({k: w[k] for k in w.files})
    return model
