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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..runtime import list_ops
from .arch import load_model, tf
from .data_types import Windows

__all__ = [
    "MIN_CALIBRATION",
    "check_int8",
    "convert",
    "delegation",
    "fp32_path_for",
    "latency_ms",
    "latency_side_by_side",
    "list_ops",
]

log = logging.getLogger(__name__)

MIN_CALIBRATION = 200

# ops whose float output is part of int8 plumbing, not float compute
_PLUMBING = {"QUANTIZE"}


def fp32_path_for(out: Path) -> Path:
    """``humigraph-int8.tflite`` -> ``humigraph-fp32.tflite``; any other name gets ``-fp32``."""
    out = Path(out)
    if "int8" in out.stem:
        return out.with_name(out.stem.replace("int8", "fp32") + out.suffix)
    return out.with_name(out.stem + "-fp32" + out.suffix)


def _interpreter(path: Path, threads: int = 1, allocate: bool = True) -> Any:
    from ..runtime import interpreter_class

    cls, _ = interpreter_class()
    it = cls(model_path=str(path), num_threads=threads)
    if allocate:
        it.allocate_tensors()
    return it


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


def convert(
    savedmodel: Path | str,
    calibration: Windows,
    out: Path | str,
    *,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write the INT8 model to ``out`` and the fp32 model beside it; returns
    ``(int8 path, fp32 path, int8 op list)``. Needs at least :data:`MIN_CALIBRATION` windows."""
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
    ops = check_int8(out)
    return out, fp32, ops


def model_id(path: Path, name: str = "humigraph") -> str:
    """A stable id from the file's bytes: the same model always has the same id."""
    return f"{name}-{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"


def _feed(runner: Any, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs typed (and for an int8 model quantized) once, outside the timed loop."""
    feed = {}
    for name, a in (("x", x), ("node_mask", mask)):
        d = runner.get_input_details()[name]
        dt = np.dtype(d["dtype"])
        if dt.kind == "i":
            scale, zp = (
                d["quantization_parameters"]["scales"][0],
                d["quantization_parameters"]["zero_points"][0],
            )
            a = np.clip(np.round(a / scale) + zp, -128, 127)
        feed[name] = np.asarray(a, dtype=dt).reshape(d["shape"])
    return feed


def latency_ms(path: Path, x: np.ndarray, mask: np.ndarray, runs: int = 300) -> dict[str, Any]:
    """Single-thread latency of one site window (raw interpreter invoke, inputs already typed)."""
    return latency_side_by_side({"model": path}, x, mask, runs=runs)["model"]


def latency_side_by_side(
    paths: dict[str, Path], x: np.ndarray, mask: np.ndarray, runs: int = 1000
) -> dict[str, dict[str, Any]]:
    """Single-thread latency of each model on the same site window, the models' calls
    interleaved (A B B A ...) so that the machine's drift (other jobs, clock changes) lands on
    all of them alike; measured one after the other, two runs of one model differed by 17 %."""
    runners, feeds, its = {}, {}, {}
    for name, path in paths.items():
        its[name] = _interpreter(path, threads=1)
        runners[name] = its[name].get_signature_runner()
        feeds[name] = _feed(runners[name], x, mask)
    names = list(paths)
    for _ in range(20):
        for name in names:
            runners[name](**feeds[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for name in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            runners[name](**feeds[name])
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        ms = np.array(times[name]) * 1e3
        out[name] = {
            "median_ms": round(float(np.median(ms)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "runs": runs,
            "threads": 1,
            "interleaved_with": [n for n in names if n != name],
            **delegation(its[name]),
        }
    return out


def delegation(it: Any) -> dict[str, Any]:
    """How the default delegate (XNNPACK) split the graph: its partitions and, by op type, the
    ops left to TFLite's own kernels at their borders, where an int8 model loses time on x86.
    Empty when the interpreter does not expose its execution plan."""
    try:
        ops = it._get_ops_details()  # the interpreter's nodes, delegate kernels included
    except Exception:  # noqa: BLE001 - a private API; older runtimes lack it
        return {}
    kernels = [o for o in ops if o["op_name"] == "DELEGATE"]
    fed = {int(i) for o in kernels for i in o["inputs"]}
    made = {int(i) for o in kernels for i in o["outputs"]}
    final = {int(d["index"]) for d in it.get_output_details()}
    outside: dict[str, int] = {}
    for o in ops:
        outs = {int(i) for i in o["outputs"]}
        # a node the delegate took either makes one of its outputs or feeds only its own kind;
        # a node left outside makes a tensor a delegate reads, or a model output, itself
        if o["op_name"] != "DELEGATE" and not outs & made and outs & (fed | final):
            outside[o["op_name"]] = outside.get(o["op_name"], 0) + 1
    return {"delegate_partitions": len(kernels), "outside_delegate": dict(sorted(outside.items()))}
