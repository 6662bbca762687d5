"""Full-integer post-training quantization (TFLITE_BUILTINS_INT8, int8 in and out) and the fp32
twin, from a SavedModel written by ``humigraph train``.

The converter silently keeps an op in float when it has no int8 kernel (a DEQUANTIZE/QUANTIZE
pair around it); :func:`check_int8` reads the converted graph back and refuses such a model, so a
float op can never reach the gateway.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ModelError
from ..runtime import list_ops
from .arch import load_model, tf
from .bias_correction import correct_biases
from .card import fp32_path_for
from .data_types import Windows
from .latency import _interpreter, delegation, latency_side_by_side
from .symmetric_operands import symmetric_matmul_operands

__all__ = [
    "MIN_CALIBRATION",
    "Converted",
    "check_int8",
    "convert",
    "delegation",
    "fp32_path_for",
    "latency_side_by_side",
    "list_ops",
]

log = logging.getLogger(__name__)

MIN_CALIBRATION = 200

# ops whose float output is part of int8 plumbing, not float compute
_PLUMBING = {"QUANTIZE"}


def check_int8(path: Path) -> list[dict[str, Any]]:
    """The op list of an INT8 model; :class:`ModelError` naming every op that computes in float
    and every model input/output that is not int8."""
    ops = list_ops(path)
    bad = [
        f"#{i} {op['op']} ({'/'.join(op['inputs'])} -> {'/'.join(op['outputs'])})"
        for i, op in enumerate(ops)
        if op["op"] not in _PLUMBING
        and any(d.startswith("float") for d in op["inputs"] + op["outputs"])
    ]
    if bad:
        raise ModelError(
            f"{path}: {len(bad)} op(s) stayed float after INT8 quantization: {', '.join(bad)}; "
            f"replace them in humigraph/model/arch.py with ops that have int8 kernels"
        )
    it = _interpreter(path)
    runner = it.get_signature_runner()
    for kind, details in (
        ("input", runner.get_input_details()),
        ("output", runner.get_output_details()),
    ):
        for name, d in details.items():
            if np.dtype(d["dtype"]) != np.int8:
                raise ModelError(
                    f"{path}: {kind} {name!r} is {np.dtype(d['dtype']).name}, not int8"
                )
    return ops


def _representative(w: Windows, clip: float) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(w)):
            # the model clips x to ±clip first; calibrating on clipped windows keeps the input
            # scale where the values the model uses are, not at a rare spike
            yield {
                "x": np.clip(w.x[i : i + 1], -clip, clip).astype(np.float32),
                "node_mask": w.node_mask[i : i + 1].astype(np.float32),
            }

    return gen


class Converted(NamedTuple):
    int8: Path
    fp32: Path
    ops: list[dict[str, Any]]  # the INT8 graph's ops (check_int8)
    bias_correction: dict[str, Any] | None  # what correct_biases did; None when turned off
    symmetric: list[dict[str, Any]]  # operands given zero point 0 (symmetric_operands.py)


def convert(
    savedmodel: Path | str,
    calibration: Windows,
    out: Path | str,
    *,
    bias_correction: bool = True,
    echo: Callable[[str], None] | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> Converted:
    """Write the INT8 model to ``out`` and the fp32 model beside it, the INT8 one's biases
    corrected for its weights' rounding (bias_correction.py) unless ``bias_correction`` is
    False. Needs at least :data:`MIN_CALIBRATION` windows."""
    echo = echo or log.info
    if len(calibration) < MIN_CALIBRATION:
        raise ModelError(
            f"calibration: {len(calibration)} windows, INT8 calibration needs at least "
            f"{MIN_CALIBRATION} real windows; give a longer --calibration SPEC"
        )
    out = Path(out)
    if out.suffix != ".tflite":
        raise ModelError(f"--out {out}: the model file must end in .tflite")
    model = load_model(savedmodel)  # checks the directory and rebuilds the exact module
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_path_for(out)
    with tempfile.TemporaryDirectory(prefix="humigraph-sm-") as tmp:
        # re-export from the rebuilt module: the converter sees exactly the serving signature
        sm = Path(tmp) / "sm"
        tf.saved_model.save(
            model, str(sm), signatures={"serving_default": model.serving_function()}
        )
        echo("converting the float32 model")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        fp32.write_bytes(conv.convert())
        echo(f"calibrating the INT8 model on {len(calibration)} windows")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(calibration, model.arch.clip_in)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        try:
            data = conv.convert()
        except Exception as e:  # the converter raises bare ConverterError/RuntimeError
            raise ModelError(f"INT8 conversion failed: {str(e).strip().splitlines()[-1]}") from None
        out.write_bytes(data)
    check_int8(out)  # a float op named now, not as a failed pairing in the correction
    symmetric = symmetric_matmul_operands(out)  # so that XNNPACK runs those BATCH_MATMULs
    for sym in symmetric:
        echo(f"symmetric int8 operand {sym['tensor']}: step {sym['step_before']} -> "
             f"{sym['step_after']}")  # fmt: skip
    corrected = None
    if bias_correction:
        corrected = correct_biases(
            out, fp32, calibration, model.arch.clip_in, echo=echo, progress=progress
        )
    return Converted(out, fp32, check_int8(out), corrected, symmetric)


def model_id(path: Path, name: str = "humigraph") -> str:
    """A stable id from the file's bytes: the same model always has the same id."""
    return f"{name}-{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"
