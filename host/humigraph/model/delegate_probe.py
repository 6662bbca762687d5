"""Timing probes for ``humigraph bench model --probe``: copies of an INT8 ``.tflite`` whose SOFTMAX
ops, which XNNPACK's delegate has no int8 kernel for, are swapped for LOGISTIC, which it has.

A probe is not a model: its outputs are wrong. It answers one question: how much of INT8's time
against float32 is the ops XNNPACK leaves to TFLite's own kernels (the graph's share, which a
different graph could remove) and how much is XNNPACK's int8 kernels on this CPU (the CPU's
share). Both SOFTMAX and LOGISTIC int8 outputs are fixed at scale 1/256, zero point -128, so the
swap needs nothing but the operator's opcode index, patched in place.

The flatbuffer is read with ``struct`` against the TFLite schema's field order (no TensorFlow and
no generated schema: ``bench model`` runs where only a TFLite runtime is installed)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ModelError

__all__ = ["ProbeError", "SwappableOp", "softmax_ops", "swap_for_logistic"]

# tflite schema.fbs, BuiltinOperator
_LOGISTIC = 14
_SOFTMAX = 25
# field numbers: Model.operator_codes 1, subgraphs 2; OperatorCode.deprecated_builtin_code 0,
# builtin_code 3; SubGraph.tensors 0, operators 3; Operator.opcode_index 0, inputs 1;
# Tensor.shape 0


class ProbeError(ModelError):
    """The file cannot be probed (not a TFLite flatbuffer, or nothing to swap)."""


@dataclass(frozen=True)
class SwappableOp:
    index: int  # the operator's place in the main subgraph
    shape: tuple[int, ...]  # its input's shape

    def describe(self) -> str:
        return f"op {self.index} SOFTMAX [{'x'.join(map(str, self.shape))}]"


class _Table:
    """One flatbuffer table: fields by number, as the schema numbers them."""

    def __init__(self, buf: bytes | bytearray, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def field(self, n: int) -> int:
        """The field's absolute position, 0 when absent (the schema's default applies)."""
        slot = 4 + 2 * n
        if slot >= self.vt_size:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else 0

    def scalar(self, n: int, fmt: str, default: int = 0) -> int:
        p = self.field(n)
        return struct.unpack_from(fmt, self.buf, p)[0] if p else default

    def vector(self, n: int) -> tuple[int, int]:
        """``(first element's position, length)``; ``(0, 0)`` when absent."""
        p = self.field(n)
        if not p:
            return 0, 0
        vec = p + struct.unpack_from("<I", self.buf, p)[0]
        return vec + 4, struct.unpack_from("<I", self.buf, vec)[0]

    def tables(self, n: int) -> list[_Table]:
        start, length = self.vector(n)
        out = []
        for j in range(length):
            e = start + 4 * j
            out.append(_Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def ints(self, n: int) -> list[int]:
        start, length = self.vector(n)
        return [struct.unpack_from("<i", self.buf, start + 4 * j)[0] for j in range(length)]


def _model(buf: bytes | bytearray) -> _Table:
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise ProbeError("not a TFLite flatbuffer (no TFL3 identifier): probe an INT8 .tflite")
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


def _codes(model: _Table) -> list[int]:
    # builtin codes past 127 live in builtin_code; older files have only the deprecated byte
    return [max(c.scalar(0, "<b"), c.scalar(3, "<i")) for c in model.tables(1)]


@contextmanager
def _damaged_is_probe_error() -> Iterator[None]:
    try:
        yield
    except (struct.error, IndexError) as e:  # offsets pointing outside the file
        raise ProbeError(f"a damaged TFLite flatbuffer ({e}): probe a file quantize wrote") from e


def softmax_ops(buf: bytes | bytearray) -> list[SwappableOp]:
    """The main subgraph's SOFTMAX operators, each with its input's shape."""
    with _damaged_is_probe_error():
        model = _model(buf)
        codes = _codes(model)
        graph = model.tables(2)[0]
        tensors = graph.tables(0)
        out = []
        for i, op in enumerate(graph.tables(3)):
            if codes[op.scalar(0, "<I")] == _SOFTMAX:
                first = op.ints(1)[0]
                out.append(SwappableOp(i, tuple(tensors[first].ints(0))))
        return out


def swap_for_logistic(buf: bytes | bytearray, ops: list[SwappableOp]) -> bytes:
    """A copy of ``buf`` with the given SOFTMAX operators running LOGISTIC instead. The file
    must already use LOGISTIC somewhere (the opcode is reused, not added)."""
    out = bytearray(buf)
    with _damaged_is_probe_error():
        model = _model(out)
        codes = _codes(model)
        if _LOGISTIC not in codes:
            raise ProbeError("the model has no LOGISTIC op whose opcode a probe could reuse")
        logistic = codes.index(_LOGISTIC)
        graph_ops = model.tables(2)[0].tables(3)
        for o in ops:
            p = graph_ops[o.index].field(0)
            if not p or codes[struct.unpack_from("<I", out, p)[0]] != _SOFTMAX:
                # an absent opcode_index means opcode 0, stored nowhere to patch in place
                raise ProbeError(
                    f"{o.describe()}: not a SOFTMAX with its opcode stored in the file"
                )
            struct.pack_into("<I", out, p, logistic)
    return bytes(out)
