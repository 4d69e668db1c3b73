"""Spell ReduceL1, ReduceSumSquare and ReduceLogSum with ReduceSum, which ORT 1.19.2 can train.

    ReduceL1(x)        = ReduceSum(Abs(x))
    ReduceSumSquare(x) = ReduceSum(x * x)
    ReduceLogSum(x)    = Log(ReduceSum(x))

Same axes, keepdims and noop_with_empty_axes. ReduceSum takes its axes as an attribute before
opset 13 and as an input from 13; the others switch at opset 18: the axes are carried over.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker, attr, const_value, constant, rewrite_each

_BEFORE = {"ReduceL1": "Abs", "ReduceSumSquare": "Mul", "ReduceLogSum": None}


def _as_sum(opset: int):
    def rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
        axes = attr(node, "axes")
        given = node.input[1] if len(node.input) > 1 and node.input[1] else ""
        if given and opset < 13:
            return None, "axes given as an input below opset 13"  # cannot happen in a valid model
        if axes is None and given and const_value(graph, given) is None and opset < 13:
            return None, "axes not constant"
        base = node.name or node.output[0]
        nodes, x = [], node.input[0]
        pre = _BEFORE[node.op_type]
        if pre:
            out = fresh(f"{base}/{pre.lower()}")
            nodes.append(helper.make_node(pre, [x, x] if pre == "Mul" else [x], [out], name=out))
            x = out
        keep = {"keepdims": attr(node, "keepdims", 1)}
        if opset >= 13:
            keep["noop_with_empty_axes"] = attr(node, "noop_with_empty_axes", 0)
            if axes is not None:
                given = fresh(f"{base}/axes")
                graph.initializer.append(constant(given, axes, onnx.TensorProto.INT64))
            inputs = [x, given] if given else [x]
        else:
            inputs = [x]
            if axes is not None:
                keep["axes"] = axes
        total = node.output[0] if node.op_type != "ReduceLogSum" else fresh(f"{base}/sum")
        nodes.append(helper.make_node("ReduceSum", inputs, [total], name=fresh(f"{base}/reducesum"), **keep))
        if node.op_type == "ReduceLogSum":
            nodes.append(helper.make_node("Log", [total], [node.output[0]], name=fresh(f"{base}/log")))
        return nodes, f"{node.op_type} '{node.name}' -> ReduceSum"
    return rewrite


def reduce_to_reducesum(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level ReduceL1, ReduceSumSquare and ReduceLogSum with a ReduceSum."""
    changed, notes = 0, []
    for op in _BEFORE:
        result = rewrite_each(model, op, _as_sum(default_opset(model)))
        model, changed, notes = result.model, changed + result.changed, notes + list(result.notes)
    return PassResult(model, changed, tuple(notes))
