"""Single-thread latency of ``.tflite`` models on one site window, side by side (no TensorFlow:
``humigraph bench model`` runs where only a TFLite runtime is installed, as on a Jetson)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["delegation", "latency_side_by_side"]


def _interpreter(path: Path, threads: int = 1, allocate: bool = True) -> Any:
    from ..runtime import interpreter_class

    cls, _ = interpreter_class()
    it = cls(model_path=str(path), num_threads=threads)
    if allocate:
        it.allocate_tensors()
    return it


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


def latency_side_by_side(
    paths: dict[str, Path], x: np.ndarray, mask: np.ndarray, runs: int = 1000
) -> dict[str, dict[str, Any]]:
    """Single-thread latency of each model on the same site window, the models' calls
    interleaved (A B B A ...) so that the machine's drift (other jobs, clock changes) lands on
    all of them alike (measured one after the other, two INT8 models of one architecture came 17 %
    apart while their float twins agreed)."""
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
