"""THE table: which input of which op is a weight, and which roles are left alone on purpose.

Every decision about what inq-onnx may quantize starts here. A row says which input of an op
is a weight and along which axes its output channels run (for per-channel codebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import onnx

ChannelAxes = Callable[[onnx.NodeProto, int], Optional[tuple[int, ...]]]
"""(node, weight rank) -> the output-channel axes, or None when no such axis exists."""


def attr(node: onnx.NodeProto, name: str, default):
    """The value of attribute ``name`` of ``node`` (as onnx gives it: strings are bytes), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv(node, rank):
    return (0,)


def _conv_transpose(node, rank):
    # [C_in, C_out / group, k...]: one output-channel axis only when group == 1.
    return (1,) if attr(node, "group", 1) == 1 else None


def _gemm_b(node, rank):
    return (0,) if attr(node, "transB", 0) else (1,)


def _gemm_a(node, rank):
    return (1,) if attr(node, "transA", 0) else (0,)


def _matmul_b(node, rank):
    return None if rank < 2 else tuple(range(rank - 2)) + (rank - 1,)


def _matmul_a(node, rank):
    return None if rank < 2 else tuple(range(rank - 2)) + (rank - 2,)


def _recurrent(node, rank):
    return (0, 1)  # [directions, gates * hidden, size]: one codebook per gate row


def _einsum(index: int) -> ChannelAxes:
    def axes(node, rank):
        equation = attr(node, "equation", b"")
        equation = equation.decode() if isinstance(equation, bytes) else equation
        if "->" not in equation or "." in equation:
            return None
        operands, output = equation.replace(" ", "").split("->")
        letters = operands.split(",")[index]
        chosen = tuple(i for i, c in enumerate(letters) if c in output)
        return chosen or None

    return axes


@dataclass(frozen=True)
class WeightSlot:
    op_type: str
    input_index: int
    role: str
    channel_axes: ChannelAxes


WEIGHT_SLOTS: dict[tuple[str, int], WeightSlot] = {
    (s.op_type, s.input_index): s
    for s in (
        WeightSlot("Conv", 1, "kernel", _conv),
        WeightSlot("ConvTranspose", 1, "kernel", _conv_transpose),
        WeightSlot("Gemm", 1, "matrix", _gemm_b),
        WeightSlot("Gemm", 0, "matrix", _gemm_a),
        WeightSlot("MatMul", 1, "matrix", _matmul_b),
        WeightSlot("MatMul", 0, "matrix", _matmul_a),
        WeightSlot("LSTM", 1, "input weights W", _recurrent),
        WeightSlot("LSTM", 2, "recurrence weights R", _recurrent),
        WeightSlot("GRU", 1, "input weights W", _recurrent),
        WeightSlot("GRU", 2, "recurrence weights R", _recurrent),
        WeightSlot("RNN", 1, "input weights W", _recurrent),
        WeightSlot("RNN", 2, "recurrence weights R", _recurrent),
        *(WeightSlot("Einsum", i, "operand", _einsum(i)) for i in range(8)),
    )
}

LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Slice", "Concat", "Identity", "Cast"})
"""Ops a weight may pass through on its way to its op; they move values, never change them."""

BIAS_SLOTS = {("Conv", 2), ("ConvTranspose", 2), ("Gemm", 2), ("LSTM", 3), ("GRU", 3), ("RNN", 3)}

NORMALIZATION_OPS = frozenset({
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization",
})

QUANTIZED_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulNBits", "MatMulIntegerToFloat", "QGemm", "QAttention",
})

STANDARD_DOMAINS = ("", "ai.onnx")


def is_layout_data_input(node: onnx.NodeProto, input_index: int) -> bool:
    """True where a value flows unchanged through a layout op (its data input, any Concat input)."""
    if node.op_type not in LAYOUT_OPS or node.domain not in STANDARD_DOMAINS:
        return False
    return node.op_type == "Concat" or input_index == 0


def weight_slot(node: onnx.NodeProto, input_index: int) -> WeightSlot | None:
    if node.domain not in STANDARD_DOMAINS:
        return None
    return WEIGHT_SLOTS.get((node.op_type, input_index))


def non_weight_reason(node: onnx.NodeProto, input_index: int, label: str) -> str:
    """Why a use of a constant by this node's input is not a weight, in words a user reads."""
    op = node.op_type
    if (op, input_index) in BIAS_SLOTS:
        return f"bias (input {input_index}) of {label}"
    if op in NORMALIZATION_OPS:
        return f"normalization parameter of {label}"
    if op in QUANTIZED_OPS:
        return f"already quantized: feeds {label}"
    return f"feeds {label} input {input_index}, which is not a weight input"
