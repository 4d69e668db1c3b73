"""Spell MeanVarianceNormalization with ReduceMean, Sub, Mul, Sqrt, Add and Div.

ORT 1.19.2 fails to build the gradient of MeanVarianceNormalization (ONNX shape inference of its
function body breaks inside the gradient builder). ONNX defines it, over ``axes`` (default
[0, 2, 3]), as ``(x - mean) / (Sqrt(variance) + 1e-9)``; here

    d = x - ReduceMean(x, axes);  y = d / (Sqrt(ReduceMean(d * d, axes)) + 1e-9)

(the variance as the mean square of d, which cannot go negative through rounding). Float
rounding differs from ORT's kernel by about 1e-6 relative.
"""

from __future__ import annotations

import onnx

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, NodeEmitter, attr, constant, rewrite_each


def _moments(opset: int):
    def rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
        elem_type = types.get(node.input[0], (0, None))[0]
        if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return None, "not a float or double tensor"
        axes = list(attr(node, "axes", [0, 2, 3]))
        base = node.name or node.output[0]
        axes_name, eps = fresh(f"{base}/axes"), fresh(f"{base}/eps")
        graph.initializer.append(constant(eps, 1e-9, elem_type))
        if opset >= 18:
            graph.initializer.append(constant(axes_name, axes, onnx.TensorProto.INT64))
        nodes: list[onnx.NodeProto] = []

        add = NodeEmitter(fresh, base, nodes)

        def mean(x: str) -> str:
            return add("ReduceMean", x, axes_name) if opset >= 18 else add("ReduceMean", x, axes=axes)

        d = add("Sub", node.input[0], mean(node.input[0]))
        add("Div", d, add("Add", add("Sqrt", mean(add("Mul", d, d))), eps))
        nodes[-1].output[0] = node.output[0]
        return nodes, f"MeanVarianceNormalization '{node.name}' over axes {axes} -> ReduceMean/Sqrt/Div"
    return rewrite


def mvn_to_moments(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level MeanVarianceNormalization as its moments."""
    return rewrite_each(model, "MeanVarianceNormalization", _moments(default_opset(model)))
