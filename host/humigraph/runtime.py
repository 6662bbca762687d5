"""Run a humigraph ``.tflite`` model without TensorFlow (the Jetson side).

Interpreter order: ``ai_edge_litert`` (LiteRT), then ``tflite_runtime`` (JetPack 6, numpy<2),
then ``tensorflow.lite``, imported only when neither lighter runtime is installed. Inputs go in as
float32 and come out as float32: for an INT8 model the tensors' own scale and zero point quantize
the inputs and dequantize the outputs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .model.card import ModelCard, load_card

__all__ = ["Runtime", "interpreter_class", "list_ops"]

_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite.python.interpreter", "tensorflow"),
)


def interpreter_class(prefer: str | None = None) -> tuple[Any, str]:
    """``(Interpreter class, backend name)``; ``prefer`` names one backend to use or fail."""
    tried = []
    for module, name in _CANDIDATES:
        if prefer and name != prefer:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            tried.append(f"{name} ({e})")
            continue
        return mod.Interpreter, name
    raise ModelError(
        "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime on JetPack); tried "
        + ", ".join(tried)
    )


def _quant(detail: dict[str, Any]) -> tuple[float, int]:
    q = detail.get("quantization_parameters") or {}
    scales, zps = q.get("scales"), q.get("zero_points")
    if scales is not None and len(scales):
        return float(scales[0]), int(zps[0])
    scale, zp = detail.get("quantization", (0.0, 0))
    return float(scale), int(zp)


class Runtime:
    """``rt = Runtime("models/humigraph-int8.tflite"); out = rt.run(x=..., node_mask=...)``."""

    def __init__(
        self,
        path: Path | str,
        *,
        card: ModelCard | None = None,
        threads: int = 1,
        prefer: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file (make quantize builds one)")
        self.card = card if card is not None else load_card(self.path)
        cls, self.backend = interpreter_class(prefer)
        try:
            self.interpreter = cls(model_path=str(self.path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: cannot load the model: {e}") from None
        sig = self.interpreter.get_signature_list()
        key = next(iter(sig))
        self.input_names = tuple(sig[key]["inputs"])
        self.output_names = tuple(sig[key]["outputs"])
        self._in = self.runner.get_input_details()
        self._out = self.runner.get_output_details()
        want_in = set(self.card.input_shapes)
        if set(self.input_names) != want_in:
            raise ModelError(
                f"{self.path}: inputs {sorted(self.input_names)} do not match the card's "
                f"{sorted(want_in)}"
            )
        for name, shape in self.card.input_shapes.items():
            got = tuple(int(s) for s in self._in[name]["shape"])
            if got != shape:
                raise ModelError(f"{self.path}: input {name} has shape {got}, card says {shape}")
        missing = set(self.card.output_shapes) - set(self.output_names)
        if missing:
            raise ModelError(f"{self.path}: outputs {sorted(missing)} missing")

    @property
    def input_dtypes(self) -> dict[str, np.dtype]:
        return {k: np.dtype(v["dtype"]) for k, v in self._in.items()}

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Float32 inputs by name -> float32 outputs by name (batch axis kept); ``forecast`` in
        target scales, its companding (``card.forecast_compand``) undone."""
        feed: dict[str, np.ndarray] = {}
        for name in self.input_names:
            if name not in inputs:
                raise ModelError(f"run: input {name!r} missing")
            d = self._in[name]
            a = np.asarray(inputs[name], dtype=np.float32).reshape(d["shape"])
            dtype = np.dtype(d["dtype"])
            if dtype.kind == "i":
                scale, zp = _quant(d)
                info = np.iinfo(dtype)
                a = np.clip(np.round(a / scale) + zp, info.min, info.max).astype(dtype)
            feed[name] = a
        raw = self.runner(**feed)
        out: dict[str, np.ndarray] = {}
        for name, a in raw.items():
            d = self._out[name]
            if np.dtype(d["dtype"]).kind == "i":
                scale, zp = _quant(d)
                out[name] = (a.astype(np.float32) - zp) * scale
            else:
                out[name] = np.asarray(a, dtype=np.float32)
        if "forecast" in out:
            out["forecast"] = self.card.forecast_change(out["forecast"])
        return out

    def ops(self) -> list[tuple[str, str]]:
        """``[(op name, output dtype)]`` for every op of the stored graph (for the parity report)."""
        return [
            (op["op"], op["outputs"][0] if op["outputs"] else "?")
            for op in list_ops(self.path, self.backend)
        ]


def list_ops(path: Path | str, prefer: str | None = None) -> list[dict[str, Any]]:
    """Every op of a .tflite in order: ``{"op", "inputs": [dtype...], "outputs": [dtype...]}``.

    Read from an interpreter that was never allocated: allocation hands ops to the XNNPACK
    delegate, which would hide their types behind DELEGATE nodes."""
    cls, _ = interpreter_class(prefer)
    try:
        it = cls(model_path=str(path))
        details = it._get_ops_details()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: cannot load the model: {e}") from None
    except AttributeError:
        return []
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def dtypes(idx: Any) -> list[str]:
        return [np.dtype(tensors[i]["dtype"]).name for i in idx if i >= 0 and i in tensors]

    return [
        {"op": op["op_name"], "inputs": dtypes(op["inputs"]), "outputs": dtypes(op["outputs"])}
        for op in details
    ]
