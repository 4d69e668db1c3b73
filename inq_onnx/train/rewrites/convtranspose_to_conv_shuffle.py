"""Turn a ConvTranspose whose kernel equals its stride into a 1x1 Conv and a pixel shuffle.

ORT 1.19.2 has no CPU kernel for ConvTransposeGrad. With kernel == stride, no padding and
group 1, every output pixel gets exactly one tap, so (W laid out [C_in, C_out, kh, kw]):

    W1 = Reshape(Transpose(W, [1, 2, 3, 0]), [C_out*kh*kw, C_in, 1, 1])
    y  = Reshape(Transpose(Reshape(Conv(x, W1), [N, C_out, kh, kw, H, W]), [0, 1, 4, 2, 5, 3]),
                 [N, C_out, H*kh, W*kw])  (+ Reshape(B, [1, C_out, 1, 1]))
W and B keep their names and layouts, so trained values map straight back.
"""

from __future__ import annotations

import onnx
from onnx import helper

from inq_onnx.graph.passes import PassResult
from inq_onnx.train.rewrites._graph import NameMaker, attr, constant, rewrite_each, static_shape


def _why_not(node: onnx.NodeProto, x_shape, w_shape) -> str | None:
    if x_shape is None or w_shape is None:
        return "input or weight shape not static (pin the input shapes first)"
    if len(w_shape) != 4:
        return "only 2-D ConvTranspose is handled"
    kernel = tuple(attr(node, "kernel_shape", w_shape[2:]))
    if attr(node, "group", 1) != 1:
        return "group != 1"
    if tuple(attr(node, "strides", (1, 1))) != kernel:
        return "kernel != stride"
    if any(attr(node, "pads", [0])) or any(attr(node, "output_padding", [0])):
        return "pads or output_padding"
    if any(d != 1 for d in attr(node, "dilations", [1])) or attr(node, "output_shape") is not None:
        return "dilations or output_shape"
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "auto_pad"
    return None


def _shuffle_nodes(node, x_shape, w_shape, fresh, graph) -> list[onnx.NodeProto]:
    x, w = node.input[0], node.input[1]
    c_in, c_out, kh, kw = w_shape
    height, width = x_shape[2], x_shape[3]
    base = node.name or node.output[0]
    n = {k: fresh(f"{base}/{k}") for k in (
        "w_t", "w_shape", "w_1x1", "z", "z_shape", "z6", "y6", "y_shape", "y", "b_shape", "b")}
    graph.initializer.extend([
        constant(n["w_shape"], [c_out * kh * kw, c_in, 1, 1], onnx.TensorProto.INT64),
        constant(n["z_shape"], [0, c_out, kh, kw, height, width], onnx.TensorProto.INT64),
        constant(n["y_shape"], [0, c_out, height * kh, width * kw], onnx.TensorProto.INT64),
    ])
    has_bias = len(node.input) > 2 and node.input[2]
    y = n["y"] if has_bias else node.output[0]
    nodes = [
        helper.make_node("Transpose", [w], [n["w_t"]], name=n["w_t"], perm=[1, 2, 3, 0]),
        helper.make_node("Reshape", [n["w_t"], n["w_shape"]], [n["w_1x1"]], name=n["w_1x1"]),
        helper.make_node("Conv", [x, n["w_1x1"]], [n["z"]], name=n["z"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", [n["z"], n["z_shape"]], [n["z6"]], name=n["z6"]),
        helper.make_node("Transpose", [n["z6"]], [n["y6"]], name=n["y6"], perm=[0, 1, 4, 2, 5, 3]),
        helper.make_node("Reshape", [n["y6"], n["y_shape"]], [y], name=fresh(f"{base}/shuffle")),
    ]
    if has_bias:
        graph.initializer.append(constant(n["b_shape"], [1, c_out, 1, 1], onnx.TensorProto.INT64))
        nodes += [
            helper.make_node("Reshape", [node.input[2], n["b_shape"]], [n["b"]], name=n["b"]),
            helper.make_node("Add", [y, n["b"]], [node.output[0]], name=fresh(f"{base}/bias")),
        ]
    return nodes


def _conv_shuffle(graph: onnx.GraphProto, node: onnx.NodeProto, types: dict, fresh: NameMaker):
    x_shape, w_shape = static_shape(types, node.input[0]), static_shape(types, node.input[1])
    reason = _why_not(node, x_shape, w_shape)
    if reason:
        return None, reason
    nodes = _shuffle_nodes(node, x_shape, w_shape, fresh, graph)
    return nodes, f"ConvTranspose '{node.name}' -> Conv 1x1 + pixel shuffle (weight '{node.input[1]}' kept)"


def convtranspose_to_conv_shuffle(model: onnx.ModelProto) -> PassResult:
    """Rewrite each top-level ConvTranspose with kernel == stride, no pads, group 1."""
    return rewrite_each(model, "ConvTranspose", _conv_shuffle)
