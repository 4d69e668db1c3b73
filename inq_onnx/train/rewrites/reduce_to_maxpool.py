"""Turn ReduceMax / ReduceMin over static axes into a MaxPool, which ORT 1.19.2 can differentiate.

With the input shape pinned, a max over the axes ``R`` of ``x`` is a max-pool whose window
covers them: move ``R`` last (Transpose, skipped when they already are), view the tensor as
``[1, 1, M, K]`` (M: the kept sizes, K: the reduced ones), ``MaxPool(kernel [1, K])``, and
reshape to the output shape (with or without the kept dims). ``ReduceMin(x) = -MaxPool(-x)``.
Exact: the same values are compared. Run after the softmax fold, which removes the ReduceMax
of a written-out softmax in a cheaper way.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, attr, constant, reduce_axes, rewrite_each, static_shape

_POOLABLE = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def pool_plan(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool):
    """(perm or None, pooled view [1, 1, M, K], output shape) of a max over ``axes`` of ``shape``."""
    kept = [a for a in range(len(shape)) if a not in axes]
    perm = kept + list(axes)
    m = int(np.prod([shape[a] for a in kept], dtype=np.int64))
    k = int(np.prod([shape[a] for a in axes], dtype=np.int64))
    out = [1 if a in axes else d for a, d in enumerate(shape)] if keepdims else [shape[a] for a in kept]
    return (None if perm == sorted(perm) else perm), [1, 1, m, k], out


def _pool(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    shape = static_shape(types, node.input[0])
    if shape is None:
        return None, "input shape not static (pin the input shapes first)"
    if types[node.input[0]][0] not in _POOLABLE or not shape:
        return None, "not a float tensor of rank >= 1 (MaxPool takes float, float16, double)"
    axes = reduce_axes(graph, node, len(shape))
    if axes is None:
        return None, "axes not constant, or noop_with_empty_axes with no axes"
    perm, view, final = pool_plan(shape, axes, bool(attr(node, "keepdims", 1)))
    base = node.name or node.output[0]
    nodes, x = [], node.input[0]
    if node.op_type == "ReduceMin":
        nodes.append(helper.make_node("Neg", [x], [fresh(f"{base}/neg_in")], name=fresh(f"{base}/neg_in")))
        x = nodes[-1].output[0]
    if perm is not None:
        nodes.append(helper.make_node("Transpose", [x], [fresh(f"{base}/moved")], name=fresh(f"{base}/moved"), perm=perm))
        x = nodes[-1].output[0]
    view_name, final_name = fresh(f"{base}/pool_view"), fresh(f"{base}/output_shape")
    graph.initializer.extend([constant(view_name, view, onnx.TensorProto.INT64),
                              constant(final_name, final, onnx.TensorProto.INT64)])
    viewed, pooled = fresh(f"{base}/viewed"), fresh(f"{base}/pooled")
    nodes += [
        helper.make_node("Reshape", [x, view_name], [viewed], name=viewed),
        helper.make_node("MaxPool", [viewed], [pooled], name=pooled, kernel_shape=[1, view[3]]),
    ]
    if node.op_type == "ReduceMin":
        shaped = fresh(f"{base}/shaped")
        nodes += [helper.make_node("Reshape", [pooled, final_name], [shaped], name=shaped),
                  helper.make_node("Neg", [shaped], [node.output[0]], name=fresh(f"{base}/neg_out"))]
    else:
        nodes.append(helper.make_node("Reshape", [pooled, final_name], [node.output[0]], name=fresh(f"{base}/shaped")))
    return nodes, f"{node.op_type} '{node.name}' over axes {list(axes)} -> MaxPool kernel [1, {view[3]}]"


def reduce_to_maxpool(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level ReduceMax and ReduceMin with static shapes and axes as a MaxPool."""
    results = [rewrite_each(model, "ReduceMax", _pool, released=lambda n: n.input[1:])]
    results.append(rewrite_each(results[0].model, "ReduceMin", _pool, released=lambda n: n.input[1:]))
    notes = tuple(note for r in results for note in r.notes)
    return PassResult(results[1].model, sum(r.changed for r in results), notes)
