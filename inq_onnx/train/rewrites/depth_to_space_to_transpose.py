"""Spell DepthToSpace and SpaceToDepth as Reshape -> Transpose -> Reshape (ONNX's own definition).

ORT 1.19.2 has no gradient for either op; Reshape and Transpose have one. With ``b`` the block
size and a static input ``[N, C, H, W]``:

    DepthToSpace DCR: Reshape [N, b, b, C/b², H, W],  perm [0, 3, 4, 1, 5, 2],  Reshape [N, C/b², H*b, W*b]
    DepthToSpace CRD: Reshape [N, C/b², b, b, H, W],  perm [0, 1, 4, 2, 5, 3],  Reshape [N, C/b², H*b, W*b]
    SpaceToDepth:     Reshape [N, C, H/b, b, W/b, b], perm [0, 3, 5, 1, 2, 4],  Reshape [N, C*b², H/b, W/b]

Only values move, so the forward is exact.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, attr, constant, rewrite_each, static_shape


def shuffle_plan(op: str, mode: str, shape: tuple[int, ...], b: int):
    """(first reshape, perm, final reshape) of DepthToSpace / SpaceToDepth on ``shape``, or None."""
    n, c, h, w = shape
    if op == "SpaceToDepth":
        if h % b or w % b:
            return None
        return [n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4], [n, c * b * b, h // b, w // b]
    if c % (b * b):
        return None
    depth = c // (b * b)
    if mode == "CRD":
        return [n, depth, b, b, h, w], [0, 1, 4, 2, 5, 3], [n, depth, h * b, w * b]
    return [n, b, b, depth, h, w], [0, 3, 4, 1, 5, 2], [n, depth, h * b, w * b]


def _shuffle(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    shape = static_shape(types, node.input[0])
    if shape is None or len(shape) != 4:
        return None, "input shape not static and of rank 4 (pin the input shapes first)"
    plan = shuffle_plan(node.op_type, attr(node, "mode", "DCR"), shape, int(attr(node, "blocksize")))
    if plan is None:
        return None, "the block size does not divide the input"
    first, perm, final = plan
    base = node.name or node.output[0]
    names = [fresh(f"{base}/{part}") for part in ("blocks_shape", "output_shape", "blocks", "moved")]
    graph.initializer.extend([constant(names[0], first, onnx.TensorProto.INT64),
                              constant(names[1], final, onnx.TensorProto.INT64)])
    nodes = [
        helper.make_node("Reshape", [node.input[0], names[0]], [names[2]], name=names[2]),
        helper.make_node("Transpose", [names[2]], [names[3]], name=names[3], perm=perm),
        helper.make_node("Reshape", [names[3], names[1]], [node.output[0]], name=fresh(f"{base}/reshape")),
    ]
    return nodes, f"{node.op_type} '{node.name}' -> Reshape/Transpose/Reshape"


def depth_to_space_to_transpose(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level DepthToSpace and SpaceToDepth with a static input shape."""
    first = rewrite_each(model, "DepthToSpace", _shuffle)
    second = rewrite_each(first.model, "SpaceToDepth", _shuffle)
    return PassResult(second.model, first.changed + second.changed, first.notes + second.notes)
