"""A small INT8 model with the real I/O contract (humigraph.model.card), built in the test.

Its weights are random: it proves the plumbing (runtime, gateway inference, dashboard), not any
skill. Needs TensorFlow (the [train] extra); building takes a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from humigraph.model.card import ModelCard


def build_tiny_model(out_dir: Path, card: ModelCard | None = None, seed: int = 0) -> Path:
    """Writes ``tiny-int8.tflite`` and its card into ``out_dir``; returns the .tflite path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    card = card or ModelCard(model_id="tiny-test")
    n, h, f = card.nodes, card.history, len(card.features)
    k, c, i = len(card.horizons_s), len(card.fault_classes), len(card.insights)
    tf.random.set_seed(seed)

    class Tiny(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.normal([f, 8], stddev=0.3))
            self.e = tf.Variable(tf.random.normal([n, 4]))
            self.wf = tf.Variable(tf.random.normal([8, k * 2], stddev=0.1))
            self.wc = tf.Variable(tf.random.normal([8, c]))
            self.wi = tf.Variable(tf.random.normal([8, i]))
            self.wr = tf.Variable(tf.random.normal([8, 2]))

        @tf.function(
            input_signature=[
                tf.TensorSpec([1, n, h, f], tf.float32, name="x"),
                tf.TensorSpec([1, n], tf.float32, name="node_mask"),
            ]
        )
        def serve(self, x, node_mask):
            hid = tf.reduce_mean(tf.nn.relu(tf.einsum("bnhf,fk->bnhk", x, self.w)), axis=2)
            hid = hid * node_mask[..., None]
            adj = tf.nn.softmax(tf.nn.relu(tf.matmul(self.e, self.e, transpose_b=True)), -1)[None]
            return {
                "forecast": tf.reshape(tf.matmul(tf.matmul(adj, hid), self.wf), [1, n, k, 2]),
                "fault": tf.nn.softmax(tf.matmul(hid, self.wc)),
                "insight": tf.sigmoid(tf.matmul(tf.reduce_mean(hid, 1), self.wi)),
                "adjacency": adj,
                "router": tf.nn.softmax(tf.matmul(hid, self.wr)),
            }

    m = Tiny()
    out_dir.mkdir(parents=True, exist_ok=True)
    sm = out_dir / "tiny-savedmodel"
    tf.saved_model.save(m, str(sm), signatures={"serving_default": m.serve})
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(seed)

    def rep():
        for _ in range(20):
            yield {
                "x": rng.normal(size=(1, n, h, f)).astype(np.float32),
                "node_mask": np.ones((1, n), np.float32),
            }

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = out_dir / "tiny-int8.tflite"
    path.write_bytes(conv.convert())
    card.save(path.with_suffix(".json"))
    return path
