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

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.train.rewrites._graph import (
    NameMaker, all_names, attr, const_value, constant, default_opset, drop_unused_initializers, splice,
    static_shape, value_types,
)

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


def resize_to_repeat(model: onnx.ModelProto) -> PassResult:
    """Rewrite each exact integer nearest Resize of the top-level graph as a repeat."""
    targets = [i for i, n in enumerate(model.graph.node) if n.op_type == "Resize" and not n.domain]
    if not targets:
        return PassResult(model)
    if default_opset(model) < 11:
        return PassResult(model, 0, (f"{len(targets)} Resize left alone: opset < 11 is not handled",))
    out = copy_model(model)
    graph = out.graph
    types = value_types(out)
    fresh = NameMaker(all_names(graph))
    replacements, notes = {}, []
    graph_inputs = {i: set(graph.node[i].input[1:]) for i in targets}
    for i in targets:
        node = graph.node[i]
        factors, reason = _factors(graph, node, types)
        if factors is None:
            notes.append(f"Resize '{node.name}' left alone: {reason}")
            continue
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
        replacements[i] = [
            helper.make_node("Reshape", [node.input[0], names[0]], [names[3]], name=names[3]),
            helper.make_node("Mul", [names[3], names[1]], [names[4]], name=names[4]),
            helper.make_node("Reshape", [names[4], names[2]], [node.output[0]], name=fresh(f"{base}/reshape")),
        ]
        notes.append(f"Resize '{node.name}' x{list(factors)} -> Reshape * ones -> Reshape")
    splice(graph, replacements)
    drop_unused_initializers(graph, {name for i in replacements for name in graph_inputs[i]})
    return PassResult(out if replacements else model, len(replacements), tuple(notes))
