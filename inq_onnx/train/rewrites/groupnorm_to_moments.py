"""Spell GroupNormalization with Reshape, ReduceMean, Sub, Mul, Sqrt and Div, which ORT 1.19.2 trains.

With G groups and a static input [N, C, *S]:

    g = Reshape(x, [N, G, -1]);  d = g - ReduceMean(g, [2]);  v = ReduceMean(d * d, [2])
    n = d / Sqrt(v + epsilon)
    opset 18-20 (scale, bias per group):   y = Reshape(n * scale[1, G, 1] + bias[1, G, 1], x.shape)
    opset >= 21 (scale, bias per channel): y = Reshape(n, x.shape) * scale[C, 1, ...] + bias[C, 1, ...]

This is the op's definition; float rounding differs from ORT's kernel by about 1e-6 relative.
``scale`` and ``bias`` keep their names (a Reshape reads them).
"""

from __future__ import annotations

import onnx

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, NodeEmitter, attr, constant, rewrite_each, static_shape


def _moments(opset: int):
    def rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
        shape = static_shape(types, node.input[0])
        elem_type = types.get(node.input[0], (0, None))[0]
        if shape is None or len(shape) < 3 or elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return None, "input not a float tensor of static shape and rank >= 3 (pin the input shapes first)"
        groups = int(attr(node, "num_groups"))
        if shape[1] % groups:
            return None, f"{groups} groups do not divide {shape[1]} channels"
        per_channel = opset >= 21
        base = node.name or node.output[0]
        names = [fresh(f"{base}/{p}") for p in ("grouped_shape", "axes", "eps", "param_shape", "output_shape")]
        param_shape = [shape[1]] + [1] * (len(shape) - 2) if per_channel else [1, groups, 1]
        graph.initializer.extend([
            constant(names[0], [shape[0], groups, -1], onnx.TensorProto.INT64),
            constant(names[1], [2], onnx.TensorProto.INT64),
            constant(names[2], attr(node, "epsilon", 1e-5), elem_type),
            constant(names[3], param_shape, onnx.TensorProto.INT64),
            constant(names[4], list(shape), onnx.TensorProto.INT64),
        ])
        nodes: list[onnx.NodeProto] = []

        add = NodeEmitter(fresh, base, nodes)

        grouped = add("Reshape", node.input[0], names[0])
        d = add("Sub", grouped, add("ReduceMean", grouped, names[1]))
        normed = add("Div", d, add("Sqrt", add("Add", add("ReduceMean", add("Mul", d, d), names[1]), names[2])))
        if per_channel:
            normed = add("Reshape", normed, names[4])
        scaled = add("Add", add("Mul", normed, add("Reshape", node.input[1], names[3])),
                     add("Reshape", node.input[2], names[3]))
        if not per_channel:
            add("Reshape", scaled, names[4])
        nodes[-1].output[0] = node.output[0]
        return nodes, f"GroupNormalization '{node.name}' ({groups} groups) -> Reshape/ReduceMean/Sqrt/Div"
    return rewrite


def groupnorm_to_moments(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level GroupNormalization with a static input shape as its moments."""
    return rewrite_each(model, "GroupNormalization", _moments(default_opset(model)))
