"""Turn GlobalMaxPool into a MaxPool whose kernel is the whole (static) spatial size.

ORT 1.19.2 has no gradient for GlobalMaxPool; MaxPool has one. With the input shape pinned,
``GlobalMaxPool(x) = MaxPool(x, kernel_shape = x.shape[2:])``: the same window, the same maximum,
exactly. Inputs whose spatial size is not static are left alone (and named in the notes).
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, rewrite_each, static_shape


def _maxpool(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    shape = static_shape(types, node.input[0])
    if shape is None:
        return None, "input shape not static (pin the input shapes first)"
    if not 3 <= len(shape) <= 5:
        return None, f"rank {len(shape)} has no MaxPool (1 to 3 spatial axes)"
    kernel = list(shape[2:])
    name = fresh(node.name or f"{node.output[0]}/maxpool")
    pool = helper.make_node("MaxPool", [node.input[0]], [node.output[0]], name=name, kernel_shape=kernel)
    return [pool], f"GlobalMaxPool '{node.name}' -> MaxPool kernel {kernel}"


def globalmaxpool_to_maxpool(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level GlobalMaxPool with a static input shape as a MaxPool."""
    return rewrite_each(model, "GlobalMaxPool", _maxpool)
