"""Spell LRN (local response normalization across channels) with an AveragePool over the channels.

ORT 1.19.2 has no gradient for LRN. With ``lo = (size - 1) // 2`` and ``hi = size - 1 - lo`` the
window of channel c is [c - lo, c + hi], and ONNX defines

    Y = X / (bias + alpha / size * sum over the window of X²) ** beta

The windowed sum divided by ``size`` is an AveragePool of X² (viewed as [N, 1, C, rest]) with
kernel [size, 1], pads [lo, 0, hi, 0] and count_include_pad=1, so

    Y = X / Pow(bias + alpha * AveragePool(X²), beta)

Static shapes are needed for the view (pin the input shapes first). Float rounding differs from
ORT's kernel by about 1e-7 relative.
"""

from __future__ import annotations

import numpy as np
import onnx

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, NodeEmitter, attr, constant, rewrite_each, static_shape


def _window(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    shape = static_shape(types, node.input[0])
    if shape is None or len(shape) < 3:
        return None, "input shape not static, or rank < 3 (pin the input shapes first)"
    size = int(attr(node, "size"))
    lo = (size - 1) // 2
    elem_type = types[node.input[0]][0] or onnx.TensorProto.FLOAT
    base = node.name or node.output[0]
    consts = [fresh(f"{base}/{p}") for p in ("view", "shape", "alpha", "bias", "beta")]
    graph.initializer.extend([
        constant(consts[0], [shape[0], 1, shape[1], int(np.prod(shape[2:], dtype=np.int64))], onnx.TensorProto.INT64),
        constant(consts[1], list(shape), onnx.TensorProto.INT64),
        constant(consts[2], attr(node, "alpha", 1e-4), elem_type),
        constant(consts[3], attr(node, "bias", 1.0), elem_type),
        constant(consts[4], attr(node, "beta", 0.75), elem_type),
    ])
    nodes: list[onnx.NodeProto] = []

    add = NodeEmitter(fresh, base, nodes)

    x = node.input[0]
    squares = add("Reshape", add("Mul", x, x), consts[0])
    mean = add("AveragePool", squares, kernel_shape=[size, 1], pads=[lo, 0, size - 1 - lo, 0], count_include_pad=1)
    scale = add("Pow", add("Add", add("Mul", mean, consts[2]), consts[3]), consts[4])
    add("Div", x, add("Reshape", scale, consts[1]))
    nodes[-1].output[0] = node.output[0]
    return nodes, f"LRN '{node.name}' (size {size}) -> AveragePool over the channels"


def lrn_to_avgpool(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level LRN with a static input shape."""
    return rewrite_each(model, "LRN", _window)
