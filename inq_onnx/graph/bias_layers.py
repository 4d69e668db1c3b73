"""Where a weight's bias lives, for bias correction: the layer a weight feeds, its input
activation and its bias constant (or where a new one may go), or why the layer is left alone.

A layer is a Conv, Gemm or MatMul of the main graph whose constant weight is its input 1, used
nowhere else. Its bias is Conv's input 2, Gemm's C (one value per output), or for a MatMul the
constant operand of the one Add that reads its output (how most exporters write a bias). A bias
constant used by any other node is left alone. Conv and Gemm without a bias get a new one when
``create`` is set (their bias input is optional).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.table import attr
from inq_onnx.graph.tensors import TensorSite, all_names, read_tensor
from inq_onnx.graph.uses import Use, UseIndex, build_use_index, output_key

__all__ = ["Layer", "find_layers", "expose_values", "add_bias"]

OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Layer:
    weight: TensorSite
    op_type: str
    node_index: int  # in the main graph
    activation: str  # the value multiplied by the weight (the node's input 0)
    bias: TensorSite | None  # None: a new bias is to be added as the node's input 2
    outputs: int  # output channels: the bias size
    group: int = 1
    trans_b: bool = False
    alpha: float = 1.0
    beta: float = 1.0


def _constant(index: UseIndex, name: str) -> TensorSite | None:
    for kind in ("initializer", "constant"):
        site = TensorSite(name, (), kind)
        if site in index.sites and name not in index.main_inputs:
            return site
    return None


def _own_bias(index: UseIndex, name: str, size: int, user: Use) -> TensorSite | str:
    """The bias constant ``name`` if only ``user`` reads it and it holds ``size`` values, else why not."""
    site = _constant(index, name)
    if site is None:
        return f"its bias '{name}' is computed, not a constant"
    if [u for u in index.of(("site", site)) if not (isinstance(u, Use) and (u.path, u.node_index) == (user.path, user.node_index))]:
        return f"its bias '{name}' is shared with other nodes"
    shape = tuple(index.sites[site].dims)
    if int(np.prod(shape, dtype=np.int64)) != size or (shape and shape[-1] != size):
        return f"its bias '{name}' {list(shape)} is not one value per output channel"
    return site


def _layer(index: UseIndex, weight: TensorSite, create: bool) -> Layer | str:
    if weight.graph_path:
        return "inside a subgraph"
    uses = index.of(("site", weight))
    if len(uses) != 1 or not isinstance(uses[0], Use) or uses[0].input_index != 1 or uses[0].node.op_type not in OPS:
        return "not the weight of one Conv, Gemm or MatMul"
    use = uses[0]
    node, w = use.node, index.sites[weight]
    shape = tuple(w.dims)
    base = dict(weight=weight, op_type=node.op_type, node_index=use.node_index, activation=node.input[0])
    if node.op_type == "MatMul":
        if len(shape) != 2:
            return "a MatMul weight of rank other than 2"
        readers = index.of(output_key(use, node.output[0]))
        if len(readers) != 1 or not isinstance(readers[0], Use) or readers[0].node.op_type != "Add":
            return "its MatMul output is not read by exactly one Add (no bias to correct)"
        add = readers[0]
        bias = _own_bias(index, add.node.input[1 - add.input_index], shape[1], add)
        return bias if isinstance(bias, str) else Layer(**base, bias=bias, outputs=shape[1])
    if node.op_type == "Conv":
        outputs, extra = shape[0], dict(group=int(attr(node, "group", 1)))
    else:
        if attr(node, "transA", 0):
            return "a Gemm with transA (its input is not samples first)"
        trans_b = bool(attr(node, "transB", 0))
        outputs = shape[0] if trans_b else shape[1]
        extra = dict(trans_b=trans_b, alpha=float(attr(node, "alpha", 1.0)), beta=float(attr(node, "beta", 1.0)))
        if extra["beta"] == 0.0:
            return "a Gemm with beta = 0"
    if len(node.input) > 2 and node.input[2]:
        bias = _own_bias(index, node.input[2], outputs, use)
        return bias if isinstance(bias, str) else Layer(**base, bias=bias, outputs=outputs, **extra)
    if not create:
        return "it has no bias"
    if w.data_type == onnx.TensorProto.BFLOAT16:
        return "it has no bias, and a new bfloat16 one is not written"
    return Layer(**base, bias=None, outputs=outputs, **extra)


def find_layers(model: onnx.ModelProto, weights, *, create: bool = True) -> tuple[dict[TensorSite, Layer], dict[TensorSite, str]]:
    """The layer of each weight site in ``weights``, and the reason for each one left out."""
    index = build_use_index(model)
    layers, skipped = {}, {}
    for weight in weights:
        found = _layer(index, weight, create)
        if isinstance(found, str):
            skipped[weight] = found
        else:
            layers[weight] = found
    return layers, skipped


def expose_values(model: onnx.ModelProto, names: dict[str, int]) -> PassResult:
    """A copy of ``model`` that also outputs the values ``names`` ({name: onnx elem type})."""
    out = copy_model(model)
    present = {o.name for o in out.graph.output}
    added = [n for n in names if n not in present]
    for name in added:
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, names[name], None))
    return PassResult(out, len(added), tuple(f"output '{n}' added" for n in added))


def add_bias(model: onnx.ModelProto, layer: Layer, values: np.ndarray) -> None:
    """Give ``layer``'s node a new bias initializer holding ``values`` (in the weight's dtype)."""
    node = model.graph.node[layer.node_index]
    weight = read_tensor(model, layer.weight)
    taken = all_names(model.graph)
    name, i = f"{layer.weight.name}.inq_bias", 1
    while name in taken:
        name, i = f"{layer.weight.name}.inq_bias{i}", i + 1
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=weight.dtype), name))
    while len(node.input) < 2:
        node.input.append("")
    if len(node.input) == 2:
        node.input.append(name)
    else:
        node.input[2] = name
