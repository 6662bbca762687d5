"""Single-thread latency of ``.tflite`` models on one site window, side by side (no TensorFlow:
``humigraph bench model`` runs where only a TFLite runtime is installed, as on a Jetson)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cpu_summary", "delegation", "describe_cpu", "latency_side_by_side"]

# what decides int8 against float here: x86 dot-product and matrix extensions, ARM's dot product
# and int8 matrix multiply (a Jetson Orin's Cortex-A78AE has asimddp)
_FEATURES = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
    "asimddp", "i8mm", "sve",
)  # fmt: skip


def cpu_summary(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU that timed the models: INT8 against float32 depends on it (the committed files
    took 0.87x on a Zen 4 EPYC, 1.02x on a Zen 5 and 1.02-1.16x on an AVX2-only Zen 3, the
    model before 1.13x on an Intel Xeon; docs/BENCHMARKS.md).
    Read from ``/proc/cpuinfo`` (or ``cpuinfo``, its text); fields it lacks are None."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break  # one processor's block is enough: the rest repeat it
            continue
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip().lower(), value.strip())
    flags = set((first.get("flags") or first.get("features") or "").split())

    def number(key: str) -> int | None:
        try:
            return int(first[key])
        except (KeyError, ValueError):
            return None

    return {
        "name": first.get("model name") or first.get("hardware") or platform.processor() or None,
        "family": number("cpu family"),
        "model": number("model"),
        "part": first.get("cpu part"),  # ARM: which core (0xd42: Cortex-A78AE)
        "features": [f for f in _FEATURES if f in flags],
        "cpus": os.cpu_count(),
    }


def describe_cpu(cpu: dict[str, Any]) -> str:
    """One line for a benchmark's header, e.g. ``AMD EPYC, family 25 model 17 (avx2 ...)``."""
    parts = [cpu.get("name") or "unknown CPU"]
    if cpu.get("family") is not None:
        parts.append(f"family {cpu['family']} model {cpu.get('model')}")
    elif cpu.get("part"):
        parts.append(f"part {cpu['part']}")
    features = " ".join(cpu.get("features") or []) or "no int8 extension listed"
    return f"{', '.join(parts)} ({features})"


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
