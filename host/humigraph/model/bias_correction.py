"""Bias correction of a converted INT8 model (Nagel et al. 2019, "Data-Free Quantization Through
Weight Equalization and Bias Correction", with the layer inputs' mean taken from calibration data).

Rounding a layer's weights to int8 shifts its output by ``(W_q - W) · x``. Over many inputs that
is noise, except for its mean ``(W_q - W) · E[x]``, which every reading of every node carries. In
the forecast path those shifts add up to a bias: on a site whose humidity barely moves (the UCI
office) the model committed before this correction had its INT8 +15 min humidity forecast
0.037 %RH below the float one on average, which made its error 5 % larger. The fix costs nothing
at run time: for every FULLY_CONNECTED op with a bias, in graph order, ``E[x]`` is measured on
the calibration windows (the int8 model's own dequantized input to that op, real node slots
only, with the ops before it already corrected) and the shift is taken out of the op's int32
bias, in units of its ``input scale × weight scale``.

Only the weights' share is corrected. Correcting each op's whole mean output error against the
float model instead (which takes in the rounding of every op before it) was tried for the ops
without a fused ReLU and did worse on UCI (+3.8 % against +3.3 % at +30 min, `docs/model.md`).

The float weights come from the float32 twin converted from the same SavedModel: each int8 op is
paired with the float op whose weights its dequantized weights round from (within half a
quantization step on every output channel); an op without exactly one such partner stops the
correction with :class:`ModelError` rather than correct the wrong layer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .data_types import Windows

__all__ = ["correct_biases"]

_FC = "FULLY_CONNECTED"


def _interpreter(path: Path | None, keep: bool, content: bytes | None = None) -> Any:
    from ..runtime import interpreter_class

    cls, _ = interpreter_class()
    resolver = importlib.import_module(cls.__module__).OpResolverType
    # the reference kernels, whose outputs every op keeps (XNNPACK fuses them away)
    it = cls(
        model_path=None if path is None else str(path),
        model_content=content,
        num_threads=1,
        experimental_preserve_all_tensors=keep,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    return it


def _fc_ops(it: Any) -> list[dict[str, Any]]:
    return [op for op in it._get_ops_details() if op["op_name"] == _FC]


def _dequantized_weights(it: Any, tensor: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(weights as float, per-output-channel scale)`` of an int8 weight tensor."""
    w = it.get_tensor(tensor["index"]).astype(np.float64)
    scales = np.asarray(tensor["quantization_parameters"]["scales"], dtype=np.float64)
    if scales.size == 1:
        scales = np.full(w.shape[0], scales[0])
    return w * scales[:, None], scales


def _pairs(q: Any, f: Any) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """``[(int8 op, W_q - W, weight scales)]`` for every int8 FULLY_CONNECTED op with a bias."""
    qt = {d["index"]: d for d in q.get_tensor_details()}
    ft = {d["index"]: d for d in f.get_tensor_details()}
    float_ops = _fc_ops(f)
    out, taken = [], set()
    for op in _fc_ops(q):
        if len(op["inputs"]) < 3 or op["inputs"][2] < 0:
            continue  # no bias to carry the correction
        wq, scales = _dequantized_weights(q, qt[op["inputs"][1]])
        tol = scales[:, None] * 0.5 + 1e-6
        found = []
        for k, fop in enumerate(float_ops):
            wf_t = ft[fop["inputs"][1]]
            if tuple(wf_t["shape"]) != wq.shape:
                continue
            wf = f.get_tensor(wf_t["index"]).astype(np.float64)
            if np.all(np.abs(wq - wf) <= tol):
                found.append((k, wf))
        name = qt[op["outputs"][0]]["name"]
        if len(found) != 1 or found[0][0] in taken:
            raise ModelError(
                f"bias correction: INT8 layer {name!r} has {len(found)} float twin(s) in the "
                f"float32 model; quantize again with --no-bias-correction"
            )
        taken.add(found[0][0])
        out.append((op, wq - found[0][1], scales))
    return out


def _quantized_inputs(it: Any, x: np.ndarray, mask: np.ndarray, clip: float) -> None:
    for d in it.get_input_details():
        v = np.clip(x, -clip, clip) if len(d["shape"]) == 4 else mask
        scale, zero = d["quantization"]
        it.set_tensor(d["index"], np.clip(np.round(v / scale) + zero, -128, 127).astype(np.int8))


def _real_rows(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An op's input (batch 1) as ``[rows, features]``, keeping the rows of real node slots. The
    op runs once per site (one row), or per slot or per slot and time step: rows slot by slot,
    as the model reshapes ``[1, slots, ...]``."""
    rows = a.reshape(-1, a.shape[-1])
    n = mask.shape[-1]
    if rows.shape[0] % n == 0:
        return rows[np.repeat(mask > 0, rows.shape[0] // n)]
    return rows


def correct_biases(
    int8: Path,
    fp32: Path,
    calibration: Windows,
    clip: float,
    *,
    echo: Callable[[str], None] | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Corrects ``int8`` in place (see the module docstring); returns what it did, for the card:
    the layers corrected, the windows used, and per layer the largest shift taken out, in steps
    of that layer's output. ``progress`` wraps the iteration over the layers (a tqdm bar)."""
    from tensorflow.lite.tools import flatbuffer_utils

    q, f = _interpreter(int8, keep=True), _interpreter(fp32, keep=False)
    pairs = _pairs(q, f)
    qt = {d["index"]: d for d in q.get_tensor_details()}
    model = flatbuffer_utils.read_model(str(int8))
    tensors = model.subgraphs[0].tensors
    if echo:
        echo(f"bias correction: {len(pairs)} layers, input means over {len(calibration)} windows")
    layers = []
    for op, dw, scales in progress(pairs) if progress else pairs:
        # the layers before this one are corrected already: its input mean is the one it will see
        live = _interpreter(
            None, keep=True, content=bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        )
        mean = _input_mean(live, qt[op["inputs"][0]], calibration, clip)
        if mean is None:
            continue
        shift = dw @ mean  # the mean output shift per channel, in float
        in_scale = qt[op["inputs"][0]]["quantization"][0]
        steps = np.round(shift / (in_scale * scales)).astype(np.int64)
        buf = model.buffers[tensors[op["inputs"][2]].buffer]
        if buf.data is None or not len(buf.data):
            raise ModelError(f"bias correction: the bias of op {op['index']} has no data in {int8}")
        bias = np.frombuffer(bytes(bytearray(buf.data)), dtype="<i4").astype(np.int64)
        fixed = np.clip(bias - steps, -(2**31), 2**31 - 1).astype("<i4")
        buf.data = np.frombuffer(fixed.tobytes(), dtype=np.uint8)
        out = qt[op["outputs"][0]]
        layers.append(
            {
                "layer": out["name"],
                "largest_shift_output_steps": round(
                    float(np.abs(shift).max() / out["quantization"][0]), 3
                ),
            }
        )
    flatbuffer_utils.write_model(model, str(int8))
    return {
        "method": "bias correction (Nagel et al. 2019), layer input means from calibration",
        "layers": len(layers),
        "windows": len(calibration),
        "per_layer": layers,
    }


def _input_mean(
    it: Any, tensor: dict[str, Any], calibration: Windows, clip: float
) -> np.ndarray | None:
    """The mean over the calibration windows' real node rows of an op's dequantized input."""
    total, count = 0.0, 0
    scale, zero = tensor["quantization"]
    for i in range(len(calibration)):
        _quantized_inputs(it, calibration.x[i : i + 1], calibration.node_mask[i : i + 1], clip)
        it.invoke()
        rows = _real_rows(
            (it.get_tensor(tensor["index"]).astype(np.float64) - zero) * scale,
            calibration.node_mask[i],
        )
        total = total + rows.sum(axis=0)
        count += rows.shape[0]
    return total / count if count else None
