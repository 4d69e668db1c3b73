"""Turn top-level ``Constant`` nodes holding a tensor into initializers of the same name.

ORT training can only make initializers trainable; Paddle and silero exports keep every
weight in a ``Constant`` node.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.train.rewrites._graph import attr


def constants_to_initializers(model: onnx.ModelProto) -> PassResult:
    """Move each top-level ``Constant(value=tensor)`` into ``graph.initializer``."""
    out = copy_model(model)
    graph = out.graph
    outputs = {v.name for v in graph.output}
    keep, moved, skipped = [], 0, 0
    for node in graph.node:
        value = attr(node, "value") if node.op_type == "Constant" and not node.domain else None
        if not isinstance(value, onnx.TensorProto) or node.output[0] in outputs:
            skipped += node.op_type == "Constant"
            keep.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        if out.ir_version < 4:  # before IR 4 every initializer must also be a graph input
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
        moved += 1
    del graph.node[:]
    graph.node.extend(keep)
    notes = [f"{moved} Constant nodes became initializers"] if moved else []
    if skipped:
        notes.append(f"{skipped} Constant nodes left alone (not a `value` tensor, or a graph output)")
    return PassResult(out, moved, tuple(notes))
