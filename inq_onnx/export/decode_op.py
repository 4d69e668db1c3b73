"""The unpack operator of the compact format: an ONNX model-local function of standard ops.

``inq_onnx.Unpack{b}(packed) -> (indices, table)`` reads a stream of b-bit codes field by field
(``packing.Fields``: m codes per field, a field never spans more than two bytes):

* ``packed`` uint8: the graph's b-bit segments, one per weight, back to back;
* ``indices`` int32 [fields]: each field's m codes as one integer y (width = m·b bits);
* ``table`` float32 [2^width, m]: row y holds the unit values UNITS[u] = sign(c)·2^(|c|-1) of
  the m codes in y (u the b-bit two's complement of code c; 0 for c = 0).

The graph then splits ``indices`` per weight and gathers each weight's values from ``table``
multiplied by its 2^n2 (``layout``). Fields of b in {2, 4, 8} are whole bytes: the indices are the
bytes. Otherwise a MatMul of each group's bytes with a [group_bytes, fields] matrix of powers of two
gives every field's 16-bit window over 2^shift; Floor and Mod 2^width keep the field. Only ops whose
signature is the same from opset 11 to 21 are used; every integer step is exact in float32 (below
2^16) and every value a power of two times a power of two, so weights come out bit for bit. The
inputs are constants: ONNX Runtime folds all of it once, at session creation.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.codebook import check_bits, levels_per_sign
from inq_onnx.export.packing import Fields, fields_of

DOMAIN = "inq_onnx"
DOMAIN_VERSION = 1
MIN_OPSET = 11  # Range
INPUTS, OUTPUTS = ("packed",), ("indices", "table")
NAME = re.compile(r"Unpack([2-8])")
I64, F32 = np.int64, np.float32


def op_type(bits: int) -> str:
    return f"Unpack{check_bits(bits)}"


def bits_of(name: str) -> int:
    """The bit-width of an ``Unpack{b}`` op type; ValueError if it is not one."""
    match = NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an unpack op of the {DOMAIN} domain")
    return int(match.group(1))


def unit_table(bits: int) -> np.ndarray:
    """float32 [2^b]: entry u is sign(c)·2^(|c|-1) for c = u as b-bit two's complement, 0 for
    c = 0 and -0.0 for c = -2^(b-1) (outside the codebook: the stream's code for a negative zero)."""
    u = np.arange(1 << check_bits(bits))
    c = np.where(u >= 1 << (bits - 1), u - (1 << bits), u)
    valid = (c != 0) & (np.abs(c) <= levels_per_sign(bits))
    table = np.where(valid, np.sign(c) * np.ldexp(1.0, np.abs(c) - 1), 0.0).astype(F32)
    table[1 << (bits - 1)] = -0.0
    return table


def window_matrix(layout: Fields) -> np.ndarray:
    """[group_bytes, fields]: floor(bytes @ M) is field t's bits plus at most 7 bits above them."""
    m = np.zeros((layout.group_bytes, layout.fields), dtype=F32)
    for t in range(layout.fields):
        a, r = divmod(t * layout.width, 8)
        shift = 16 - r - layout.width  # of the window bytes[a] · 256 + bytes[a + 1]
        m[a, t] = np.ldexp(1.0, 8 - shift)
        if a + 1 < layout.group_bytes:
            m[a + 1, t] = np.ldexp(1.0, -shift)
    return m


class _Body:
    """A tiny builder: each call adds one node and returns its output name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.names: set[str] = set(INPUTS)

    def const(self, name: str, value) -> str:
        return self.op("Constant", [], name, value=numpy_helper.from_array(np.asarray(value), name))

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        if output in self.names:
            raise ValueError(f"the name {output!r} is already defined in the function body")
        self.names.add(output)
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output


def _low_bits(f: _Body, x: str, width: int, prefix: str) -> str:
    """int32 of floor(x) mod 2^width (x >= 0, exact in float32)."""
    whole = f.op("Floor", [x], f"{prefix}floor")
    low = f.op("Mod", [whole, f.const(f"{prefix}mod", F32(1 << width))], f"{prefix}low", fmod=1)
    return f.op("Cast", [low], f"{prefix}int", to=TensorProto.INT32)


def _table(f: _Body, layout: Fields) -> None:
    """table[y, j] = UNITS[(y >> b·(m-1-j)) mod 2^b] for y < 2^width."""
    y = f.op("Range", [f.const("t0", I64(0)), f.const("tn", I64(1 << layout.width)), f.const("t1", I64(1))], "ty")
    as_float = f.op("Cast", [y], "tyf", to=TensorProto.FLOAT)
    column = f.op("Reshape", [as_float, f.const("tcol", np.array([-1, 1], I64))], "tc")
    inv = np.ldexp(1.0, -layout.bits * np.arange(layout.m - 1, -1, -1)).astype(F32)
    shifted = f.op("Mul", [column, f.const("tinv", inv)], "ts")
    codes = _low_bits(f, shifted, layout.bits, "t")
    f.op("Gather", [f.const("units", unit_table(layout.bits)), codes], "table", axis=0)


def _indices(f: _Body, layout: Fields) -> None:
    if layout.byte_aligned:
        f.op("Cast", ["packed"], "indices", to=TensorProto.INT32)
        return
    rows = f.op("Reshape", [f.op("Cast", ["packed"], "pf", to=TensorProto.FLOAT),
                            f.const("pshape", np.array([-1, layout.group_bytes], I64))], "rows")
    windows = f.op("MatMul", [rows, f.const("window", window_matrix(layout))], "w")
    f.op("Reshape", [_low_bits(f, windows, layout.width, "w"), f.const("flat", np.array([-1], I64))], "indices")


def unpack_function(bits: int, opset: int) -> onnx.FunctionProto:
    """The FunctionProto of ``Unpack{bits}`` for a model whose default-domain opset is ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the unpack function needs opset {MIN_OPSET} or later, the model has {opset}")
    layout = fields_of(bits)
    f = _Body()
    _indices(f, layout)
    _table(f, layout)
    return helper.make_function(DOMAIN, op_type(bits), list(INPUTS), list(OUTPUTS), f.nodes,
                                [helper.make_opsetid("", opset)])


def unpack_node(bits: int, packed: str, outputs: list[str]) -> onnx.NodeProto:
    return helper.make_node(op_type(bits), [packed], outputs, domain=DOMAIN)


def is_unpack_node(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and NAME.fullmatch(node.op_type) is not None
