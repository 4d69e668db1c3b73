"""Spell InstanceNormalization with ReduceMean, Sub, Mul, Sqrt and Div, which ORT 1.19.2 can train.

    m = ReduceMean(x, spatial axes);  d = x - m;  v = ReduceMean(d * d, spatial axes)
    y = d / Sqrt(v + epsilon) * scale[C, 1, ...] + B[C, 1, ...]

This is the op's definition (PyTorch exports GroupNorm through InstanceNormalization too). The
float rounding differs from ORT's kernel by about 1e-6 relative. ``scale`` and ``B`` keep their
names (a Reshape reads them), so trained values map back onto the user's graph.
"""

from __future__ import annotations

import onnx

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, NodeEmitter, attr, constant, rewrite_each

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _moments(opset: int):
    def rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
        elem_type, shape = types.get(node.input[0], (0, None))
        if shape is None or len(shape) < 3 or elem_type not in _FLOATS:
            return None, "rank or type of the input unknown"
        axes = list(range(2, len(shape)))
        base = node.name or node.output[0]
        params = [fresh(f"{base}/{p}") for p in ("axes", "eps", "param_shape")]
        graph.initializer.extend([constant(params[0], axes, onnx.TensorProto.INT64),
                                  constant(params[1], attr(node, "epsilon", 1e-5), elem_type),
                                  constant(params[2], [-1] + [1] * len(axes), onnx.TensorProto.INT64)])
        nodes: list[onnx.NodeProto] = []

        add = NodeEmitter(fresh, base, nodes)

        def mean(x: str) -> str:
            return add("ReduceMean", x, params[0]) if opset >= 18 else add("ReduceMean", x, axes=axes)

        d = add("Sub", node.input[0], mean(node.input[0]))
        normed = add("Div", d, add("Sqrt", add("Add", mean(add("Mul", d, d)), params[1])))
        scaled = add("Mul", normed, add("Reshape", node.input[1], params[2]))
        add("Add", scaled, add("Reshape", node.input[2], params[2]))
        nodes[-1].output[0] = node.output[0]
        return nodes, f"InstanceNormalization '{node.name}' -> ReduceMean/Sub/Mul/Sqrt/Div"
    return rewrite


def instancenorm_to_moments(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level InstanceNormalization as its moments."""
    return rewrite_each(model, "InstanceNormalization", _moments(default_opset(model)))
