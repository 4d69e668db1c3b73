"""The unpack operator of the compact format: an ONNX model-local function of standard ops.

``inq_onnx.Unpack{b}(packed) -> (indices, table)`` reads a stream of b-bit codes field by field
(``packing.Fields``: m codes per field, a field never spans more than three bytes); the narrow
layout of b bits is ``Unpack{b}``, any other ``Unpack{b}x{m}`` (the wide one of big streams),
and ``Unpack{b}r{m}`` holds m codes per field as the digits of one base-(2^(b-1)+1) number:

* ``packed`` uint8 (uint16 for 16-bit fields: two stream bytes, the first high): the graph's
  b-bit segments, one per weight, back to back;
* ``indices`` int32 [fields] (8- and 16-bit fields) or [groups, fields per group] (others):
  each field's m codes as one integer y (width = m·b bits);
* ``table`` float32 [2^width, m] (radix: [K^m, m], built with integer Div and Mod): row y holds
  the unit values UNITS[u] = sign(c)·2^(|c|-1) of the m codes in y (u the b-bit two's
  complement of code c; 0 for c = 0).

``inq_onnx.Table{b}e{m}() -> table`` is the table alone, of element fields (``Fields.element``: m
radix digits in one whole uint8 or uint16, each weight its own stream that a Cast in the graph
reads, ``layout``), built with Expand and Concat from the K digit units.

The graph then splits ``indices`` per weight and gathers each weight's values from ``table``
multiplied by its 2^n2 (``layout``). Fields of 8 or 16 bits are the stream's elements: the
indices are the elements. Otherwise a MatMul of each group's bytes with a [group_bytes, fields]
matrix of powers of two gives every field's 24-bit window over 2^shift; a Cast to int32 (which
truncates) and Mod 2^width keep the field. Only ops whose signature is the same from opset 11 to
21 are used; every integer step is exact in float32 (below 2^24) and every value a power of two
times a power of two, so weights come out bit for bit. The inputs are constants: ONNX Runtime
folds all of it once, at session creation.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.codebook import check_bits, levels_per_sign
from inq_onnx.export.packing import CODES_PER_FIELD, Fields, fields_of

DOMAIN = "inq_onnx"
DOMAIN_VERSION = 4
"""1: ``indices`` was always flat [fields]; 2: [groups, fields] for fields of other than 8 or 16 bits;
3: radix fields (``Unpack{b}r{m}``); 4: element fields (``Table{b}e{m}``, a stream per weight)."""
MIN_OPSET = 11  # Range
INPUTS, OUTPUTS = ("packed",), ("indices", "table")
NAME = re.compile(r"Unpack([2-8])(?:([xr])([1-9]|10))?")
TABLE_NAME = re.compile(r"Table([2-8])e([1-9]|10)")
I64, F32 = np.int64, np.float32


def _layout(layout: Fields | int) -> Fields:
    return layout if isinstance(layout, Fields) else fields_of(check_bits(layout))


def op_type(layout: Fields | int) -> str:
    layout = _layout(layout)
    if layout.element:
        return f"Table{layout.bits}e{layout.m}"
    if layout.radix:
        return f"Unpack{layout.bits}r{layout.m}"
    return f"Unpack{layout.bits}" + (f"x{layout.m}" if layout.m != CODES_PER_FIELD[layout.bits] else "")


def layout_of(name: str) -> Fields:
    """The field layout of an ``Unpack{b}[x|r{m}]`` or ``Table{b}e{m}`` op type; ValueError if it is not one."""
    table = TABLE_NAME.fullmatch(name)
    if table is not None:
        layout = Fields(int(table.group(1)), int(table.group(2)), radix=True, element=True)
        if layout.rows > 1 << 16:
            raise ValueError(f"{name!r} is not a table op of the {DOMAIN} domain ({layout.rows} rows)")
        return layout
    match = NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an unpack op of the {DOMAIN} domain")
    bits = int(match.group(1))
    layout = Fields(bits, int(match.group(3) or CODES_PER_FIELD[bits]), radix=match.group(2) == "r")
    if layout.width > 16:
        raise ValueError(f"{name!r} is not an unpack op of the {DOMAIN} domain (fields of {layout.width} bits)")
    return layout


def bits_of(name: str) -> int:
    """The bit-width of an unpack op type; ValueError if it is not one."""
    return layout_of(name).bits


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
        shift = 24 - r - layout.width  # of the window bytes[a] · 2^16 + bytes[a + 1] · 2^8 + bytes[a + 2]
        for k in range(3):
            if a + k < layout.group_bytes:
                m[a + k, t] = np.ldexp(1.0, 16 - 8 * k - shift)
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


def _radix_table(f: _Body, layout: Fields) -> None:
    """table[y, j] = DIGIT_UNITS[(y div K^(m-1-j)) mod K] for y < K^m, in int64."""
    y = f.op("Range", [f.const("t0", I64(0)), f.const("tn", I64(layout.rows)), f.const("t1", I64(1))], "ty")
    column = f.op("Reshape", [y, f.const("tcol", np.array([-1, 1], I64))], "tc")
    powers = f.const("tpow", (layout.base ** np.arange(layout.m - 1, -1, -1)).astype(I64))
    digits = f.op("Mod", [f.op("Div", [column, powers], "tq"), f.const("tbase", I64(layout.base))], "td")
    codes = np.arange(layout.base) - (layout.base >> 1)
    units = unit_table(layout.bits)[codes % (1 << layout.bits)]
    f.op("Gather", [f.const("units", units), digits], "table", axis=0)


def _table(f: _Body, layout: Fields) -> None:
    """table[y, j] = UNITS[(y >> b·(m-1-j)) mod 2^b] for y < 2^width."""
    if layout.radix:
        _radix_table(f, layout)
        return
    y = f.op("Range", [f.const("t0", I64(0)), f.const("tn", I64(1 << layout.width)), f.const("t1", I64(1))], "ty")
    as_float = f.op("Cast", [y], "tyf", to=TensorProto.FLOAT)
    column = f.op("Reshape", [as_float, f.const("tcol", np.array([-1, 1], I64))], "tc")
    inv = np.ldexp(1.0, -layout.bits * np.arange(layout.m - 1, -1, -1)).astype(F32)
    shifted = f.op("Mul", [column, f.const("tinv", inv)], "ts")
    codes = _low_bits(f, shifted, layout.bits, "t")
    f.op("Gather", [f.const("units", unit_table(layout.bits)), codes], "table", axis=0)


def _indices(f: _Body, layout: Fields) -> None:
    if layout.whole:
        f.op("Cast", ["packed"], "indices", to=TensorProto.INT32)
        return
    rows = f.op("Reshape", ["packed", f.const("pshape", np.array([-1, layout.group_bytes], I64))], "rows")
    as_float = f.op("Cast", [rows], "pf", to=TensorProto.FLOAT)
    windows = f.op("MatMul", [as_float, f.const("window", window_matrix(layout))], "w")
    whole = f.op("Cast", [windows], "wi", to=TensorProto.INT32)  # truncation: floor, as windows >= 0
    f.op("Mod", [whole, f.const("wmod", np.int32(1 << layout.width))], "indices")


def unpack_function(layout: Fields | int, opset: int) -> onnx.FunctionProto:
    """The FunctionProto of the unpack op of ``layout`` (or of a bit-width's narrow layout) for a
    model whose default-domain opset is ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the unpack function needs opset {MIN_OPSET} or later, the model has {opset}")
    layout = _layout(layout)
    f = _Body()
    _indices(f, layout)
    _table(f, layout)
    return helper.make_function(DOMAIN, op_type(layout), list(INPUTS), list(OUTPUTS), f.nodes,
                                [helper.make_opsetid("", opset)])


def _element_table(f: _Body, layout: Fields) -> None:
    """table[y, j] = DIGIT_UNITS[digit j of y in base K] for y < K^m, as a grid [K, ..., K, m]:
    column j is the K digit units along axis j, broadcast (Expand) over the others, the columns
    concatenated and the grid flattened to [K^m, m]. Float copies only: folding it costs ONNX
    Runtime about half what the integer Div and Mod of ``_radix_table`` do."""
    codes = np.arange(layout.base) - (layout.base >> 1)
    units = unit_table(layout.bits)[codes % (1 << layout.bits)]
    grid = f.const("grid", np.array([layout.base] * layout.m + [1], I64))
    columns = []
    for j in range(layout.m):
        shape = [1] * (layout.m + 1)
        shape[j] = layout.base
        columns.append(f.op("Expand", [f.const(f"u{j}", units.reshape(shape)), grid], f"c{j}"))
    whole = f.op("Concat", columns, "cs", axis=-1)
    f.op("Reshape", [whole, f.const("rows", np.array([-1, layout.m], I64))], "table")


def table_function(layout: Fields, opset: int) -> onnx.FunctionProto:
    """The FunctionProto of ``Table{b}e{m}`` (no input; output ``table``) for element fields."""
    if opset < MIN_OPSET:
        raise ValueError(f"the table function needs opset {MIN_OPSET} or later, the model has {opset}")
    if not layout.element:
        raise ValueError("the table function is that of element fields")
    f = _Body()
    _element_table(f, layout)
    return helper.make_function(DOMAIN, op_type(layout), [], ["table"], f.nodes, [helper.make_opsetid("", opset)])


def function(layout: Fields, opset: int) -> onnx.FunctionProto:
    """The function a layout's group calls: ``Table{b}e{m}`` for element fields, else ``Unpack{b}...``."""
    return table_function(layout, opset) if layout.element else unpack_function(layout, opset)


def unpack_node(layout: Fields | int, packed: str, outputs: list[str]) -> onnx.NodeProto:
    return helper.make_node(op_type(layout), [packed], outputs, domain=DOMAIN)


def table_node(layout: Fields, output: str) -> onnx.NodeProto:
    return helper.make_node(op_type(layout), [], [output], domain=DOMAIN)


def is_unpack_node(node: onnx.NodeProto) -> bool:
    """An ``Unpack`` or ``Table`` node of our domain."""
    return node.domain == DOMAIN and (NAME.fullmatch(node.op_type) or TABLE_NAME.fullmatch(node.op_type)) is not None
