"""Fold a softmax written out by hand into one Softmax node.

Keras / tf2onnx graphs spell softmax over axis ``a`` as

    m = ReduceMax(x, axes=[a], keepdims=1);  e = Exp(Sub(x, m));  y = Div(e, ReduceSum(e, axes=[a], keepdims=1))

ORT 1.19.2 has no gradient for ReduceMax, so this blocks training; ``Softmax(x, axis=a)`` is the
same function and trains. Before opset 13 Softmax flattens the axes from ``a`` on, so the fold is
done there only when ``a`` is the last axis. The intermediates must feed nothing else.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import attr, consumers, drop_unused_initializers, reduce_axes, value_types


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _match(graph, div, producers, types, opset) -> tuple[dict | None, str]:
    """The pattern ending at ``div``: {'x', 'axis', 'nodes'} or (None, why not)."""
    exp, total = producers.get(div.input[0]), producers.get(div.input[1])
    if exp is None or exp.op_type != "Exp" or total is None or total.op_type != "ReduceSum":
        return None, ""
    sub = producers.get(exp.input[0])
    if sub is None or sub.op_type != "Sub" or total.input[0] != exp.output[0]:
        return None, ""
    peak = producers.get(sub.input[1])
    if peak is None or peak.op_type != "ReduceMax" or peak.input[0] != sub.input[0]:
        return None, ""
    x = sub.input[0]
    shape = types.get(x, (0, None))[1]
    if shape is None:
        return None, "rank of the input unknown"
    rank = len(shape)
    axes = [reduce_axes(graph, n, rank) for n in (peak, total)]
    if axes[0] is None or axes[0] != axes[1] or len(axes[0]) != 1:
        return None, f"ReduceMax / ReduceSum axes {axes} are not one and the same axis"
    if attr(peak, "keepdims", 1) != 1 or attr(total, "keepdims", 1) != 1:
        return None, "keepdims=0"
    axis = axes[0][0]
    if opset < 13 and axis != rank - 1:
        return None, f"axis {axis} is not the last one, and Softmax before opset 13 flattens the axes after it"
    outputs = {v.name for v in graph.output}
    private = {peak.output[0]: [sub], sub.output[0]: [exp], exp.output[0]: [div, total], total.output[0]: [div]}
    for name, readers in private.items():
        if name in outputs or {n.output[0] for n in consumers(graph, name)} != {n.output[0] for n in readers}:
            return None, f"'{name}' is also read elsewhere"
    return {"x": x, "axis": axis, "nodes": [peak, sub, exp, total, div]}, ""


def softmax_pattern_to_softmax(model: onnx.ModelProto) -> PassResult:
    """Replace each top-level ReduceMax-Sub-Exp-ReduceSum-Div softmax by one Softmax node."""
    if not any(n.op_type == "ReduceMax" and not n.domain for n in model.graph.node):
        return PassResult(model)
    out = copy_model(model)
    graph = out.graph
    opset = default_opset(out)
    producers, types = _producers(graph), value_types(out)
    found, notes = [], []
    for div in [n for n in graph.node if n.op_type == "Div" and not n.domain]:
        match, why = _match(graph, div, producers, types, opset)
        if match:
            found.append(match)
        elif why:
            notes.append(f"softmax pattern ending at Div '{div.name}' left alone: {why}")
    if not found:
        return PassResult(model, 0, tuple(notes))
    drop = {n.output[0] for m in found for n in m["nodes"][:-1]}
    axes_inputs = {i for m in found for n in m["nodes"][:-1] for i in n.input[1:]}
    ends = {m["nodes"][-1].output[0]: m for m in found}
    keep = []
    for node in graph.node:
        if node.output[0] in drop:
            continue
        match = ends.get(node.output[0])
        if match:
            node = helper.make_node("Softmax", [match["x"]], [node.output[0]], name=node.name or node.output[0],
                                    axis=match["axis"])
            notes.append(f"softmax over axis {match['axis']} written out as ReduceMax/Sub/Exp/ReduceSum/Div "
                         f"-> Softmax '{node.name}'")
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    drop_unused_initializers(graph, axes_inputs)
    return PassResult(out, len(found), tuple(notes))
