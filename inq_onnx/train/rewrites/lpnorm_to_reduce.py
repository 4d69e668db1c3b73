"""Spell LpNormalization with a ReduceL2 (p=2) or ReduceSum of Abs (p=1), which ORT 1.19.2 trains.

    p = 2:  y = x / Max(ReduceL2(x, [axis], keepdims=1), tiny)
    p = 1:  y = x / Max(ReduceSum(Abs(x), [axis], keepdims=1), tiny)

``tiny`` is the smallest normal float of the type: a zero vector stays zero (0 / tiny), as in
ORT's kernel, and every other vector is divided by its norm exactly as before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, NodeEmitter, attr, constant, rewrite_each


def _norm(opset: int):
    def rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
        elem_type = types.get(node.input[0], (0, None))[0] or onnx.TensorProto.FLOAT
        if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return None, "not a float or double tensor"
        p = attr(node, "p", 2)
        if p not in (1, 2):
            return None, f"p = {p} (only 1 and 2 exist)"
        axis = attr(node, "axis", -1)
        base = node.name or node.output[0]
        tiny, axes = fresh(f"{base}/tiny"), fresh(f"{base}/axes")
        graph.initializer.append(constant(tiny, np.finfo(helper.tensor_dtype_to_np_dtype(elem_type)).tiny, elem_type))
        nodes: list[onnx.NodeProto] = []

        add = NodeEmitter(fresh, base, nodes)

        x, reduce_op = node.input[0], "ReduceL2" if p == 2 else "ReduceSum"
        source = x if p == 2 else add("Abs", x)
        if opset >= (18 if p == 2 else 13):
            graph.initializer.append(constant(axes, [axis], onnx.TensorProto.INT64))
            norm = add(reduce_op, source, axes, keepdims=1)
        else:
            norm = add(reduce_op, source, axes=[axis], keepdims=1)
        add("Div", x, add("Max", norm, tiny))
        nodes[-1].output[0] = node.output[0]
        return nodes, f"LpNormalization '{node.name}' (p={p}) -> {reduce_op}/Max/Div"
    return rewrite


def lpnorm_to_reduce(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level LpNormalization with p 1 or 2."""
    return rewrite_each(model, "LpNormalization", _norm(default_opset(model)))
