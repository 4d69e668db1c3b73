"""Turn nearest-neighbour Resize by integer factors into Reshape * ones -> Reshape.

ORT 1.19.2 has no CPU kernel for ResizeGrad; Mul and Reshape have one. For integer scales
``s`` and these coordinate modes, nearest Resize is exactly "repeat each element s times":
asymmetric + floor, and half_pixel / pytorch_half_pixel + round_prefer_floor / _ceil.
The rewrite uses static shapes: pin the input shapes first. Other Resizes are left alone
(and named in the notes), and will block training.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, attr, const_value, constant, rewrite_each, static_shape

_EXACT_MODES = {
    ("asymmetric", "floor"),
    ("half_pixel", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil"),
    ("pytorch_half_pixel", "round_prefer_floor"), ("pytorch_half_pixel", "round_prefer_ceil"),
}


def repeat_factors(shape: tuple[int, ...], scales, sizes) -> tuple[int, ...] | None:
    """Per-axis integer factors of a Resize from ``shape``, or None if not all integers >= 1."""
    if scales is not None and scales.size:
        factors = np.asarray(scales, np.float64)
    elif sizes is not None and sizes.size:
        factors = np.asarray(sizes, np.float64) / np.asarray(shape, np.float64)
    else:
        return None
    if factors.shape != (len(shape),) or np.any(factors < 1) or np.any(factors != np.round(factors)):
        return None
    return tuple(int(f) for f in factors)


def repeat_shapes(shape, factors) -> tuple[list[int], list[int], list[int]]:
    """(reshaped input, ones to multiply by, output) shapes of the repeat for ``factors``."""
    expanded, ones = [], []
    for dim, factor in zip(shape, factors):
        expanded.append(dim)
        ones.append(1)
        if factor > 1:
            expanded.append(1)
            ones.append(factor)
    return expanded, ones, [d * f for d, f in zip(shape, factors)]


def _factors(graph, node, types) -> tuple[tuple[int, ...] | None, str]:
    modes = (
        attr(node, "coordinate_transformation_mode", "half_pixel"),
        attr(node, "nearest_mode", "round_prefer_floor"),
    )
    if attr(node, "mode", "nearest") != "nearest" or modes not in _EXACT_MODES:
        return None, f"mode {attr(node, 'mode', 'nearest')} / {modes[0]} / {modes[1]} is not an exact repeat"
    if attr(node, "axes") is not None:
        return None, "the axes attribute is not handled"
    shape = static_shape(types, node.input[0])
    if shape is None:
        return None, "input shape not static (pin the input shapes first)"
    inputs = list(node.input) + ["", ""]
    scales = const_value(graph, inputs[2]) if inputs[2] else None
    sizes = const_value(graph, inputs[3]) if inputs[3] else None
    factors = repeat_factors(shape, scales, sizes)
    return factors, "" if factors else "scales are not constant integers >= 1"


def _repeat(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    factors, reason = _factors(graph, node, types)
    if factors is None:
        return None, reason
    shape = static_shape(types, node.input[0])
    expanded, ones, final = repeat_shapes(shape, factors)
    base = node.name or node.output[0]
    names = [fresh(f"{base}/{part}") for part in ("expanded_shape", "ones", "output_shape", "expanded", "repeated")]
    elem_type = types[node.input[0]][0] or onnx.TensorProto.FLOAT
    graph.initializer.extend([
        constant(names[0], expanded, onnx.TensorProto.INT64),
        constant(names[1], np.ones(ones), elem_type),
        constant(names[2], final, onnx.TensorProto.INT64),
    ])
    nodes = [
        helper.make_node("Reshape", [node.input[0], names[0]], [names[3]], name=names[3]),
        helper.make_node("Mul", [names[3], names[1]], [names[4]], name=names[4]),
        helper.make_node("Reshape", [names[4], names[2]], [node.output[0]], name=fresh(f"{base}/reshape")),
    ]
    return nodes, f"Resize '{node.name}' x{list(factors)} -> Reshape * ones -> Reshape"


def resize_to_repeat(model: onnx.ModelProto) -> PassResult:
    """Rewrite each exact integer nearest Resize of the top-level graph as a repeat."""
    if default_opset(model) < 11:
        count = sum(n.op_type == "Resize" and not n.domain for n in model.graph.node)
        if count:
            return PassResult(model, 0, (f"{count} Resize left alone: opset < 11 is not handled",))
    return rewrite_each(model, "Resize", _repeat, released=lambda node: node.input[1:])
