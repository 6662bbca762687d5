"""Zero point 0 for the int8 BATCH_MATMUL operands XNNPACK would otherwise refuse.

XNNPACK's delegate runs an int8 BATCH_MATMUL only when its second operand has zero point 0;
otherwise the op falls back to TFLite's own kernel, between two XNNPACK partitions. The
converter gives every activation an asymmetric range, so the messages' BATCH_MATMUL
(adjacency × the neighbours' 16-wide messages) stayed outside: on an AMD EPYC of CPU family 26
(Zen 5; `humigraph bench model`, 2026-11-30) the INT8 model took 1.12× the float time with it
outside and 1.05× with that operand made symmetric.

Making a tensor symmetric keeps its whole calibrated range: ``[(-128 - zp)·s, (127 - zp)·s]``
becomes ``±max(|lo|, |hi|)`` over 127 steps, so the step grows by ``max(|lo|, |hi|)·2/255/s``
(5.5 % for the messages, whose range is nearly centred). Only tensors whose producer and every
consumer requantize from the tensors' own scales are changed (a FULLY_CONNECTED producer;
BATCH_MATMUL, ADD, SUB, MUL consumers); a tensor whose step would grow by more than half
(a one-sided range, e.g. after a ReLU) is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["symmetric_matmul_operands"]

_PRODUCERS = {"FULLY_CONNECTED"}
_CONSUMERS = {"BATCH_MATMUL", "ADD", "SUB", "MUL"}
_MAX_STEP_GROWTH = 1.5


def _op_names(model: Any) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    # builtinCode is the int32 field; older files carry codes below 127 in the int8 one only
    return [
        names.get(max(int(c.builtinCode), int(c.deprecatedBuiltinCode)), "?")
        for c in model.operatorCodes
    ]


def symmetric_matmul_operands(path: Path) -> list[dict[str, Any]]:
    """Rewrites ``path`` in place (see the module docstring); returns per changed tensor its
    name and its step before and after, for the card."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    sg = model.subgraphs[0]
    names = _op_names(model)
    kind = [names[op.opcodeIndex] for op in sg.operators]
    producer: dict[int, int] = {}
    consumers: dict[int, list[int]] = {}
    for k, op in enumerate(sg.operators):
        for t in op.outputs:
            producer[int(t)] = k
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(int(t), []).append(k)
    changed = []
    for k, op in enumerate(sg.operators):
        if kind[k] != "BATCH_MATMUL":
            continue
        t = int(op.inputs[1])
        q = sg.tensors[t].quantization
        if q is None or q.scale is None or len(q.scale) != 1 or int(q.zeroPoint[0]) == 0:
            continue
        if t not in producer or kind[producer[t]] not in _PRODUCERS:
            continue
        if not {kind[c] for c in consumers.get(t, [])} <= _CONSUMERS:
            continue
        scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
        new = max((128 + zero) * scale, (127 - zero) * scale) / 127
        if new > _MAX_STEP_GROWTH * scale:
            continue
        q.scale = np.array([new], dtype=np.float32)
        q.zeroPoint = np.array([0], dtype=np.int64)
        changed.append(
            {
                "tensor": bytes(sg.tensors[t].name).decode(errors="replace"),
                "step_before": round(scale, 6),
                "step_after": round(new, 6),
            }
        )
    if changed:
        flatbuffer_utils.write_model(model, str(path))
    return changed
