"""Which ops on the gradient path ORT 1.19.2 (CPU) cannot train through, known up front.

The path is every node that both depends on a float constant (a weight) and feeds a float
graph output; values that are not float (shapes, indices) carry no gradient and stop it.
"""

from __future__ import annotations

import onnx

from inq_onnx.graph.tensors import all_names, iter_graphs, subgraphs
from inq_onnx.train.rewrites._graph import value_types

_NO_BUILDER = "no gradient builder"
# Measured on ORT 1.19.2 CPU (Loop/Scan excepted), each op alone after a Conv: generate_artifacts,
# Module, one train step.
GRADIENT_BLOCKERS: dict[str, str] = {
    "HardSigmoid": f"{_NO_BUILDER} (rewrite: hardsigmoid_to_minmax)",
    "HardSwish": f"{_NO_BUILDER} (rewrite: hardsigmoid_to_minmax)",
    "If": "aborts the gradient builder with SIGABRT (rewrite: fold_if)",
    "Loop": "control flow on the gradient path (not measured; assumed to fail like If)",
    "Scan": "control flow on the gradient path (not measured; assumed to fail like If)",
    "Resize": "no CPU kernel for ResizeGrad (rewrite: resize_to_repeat, integer nearest only)",
    "ConvTranspose": "no CPU kernel for ConvTransposeGrad (rewrite: convtranspose_to_conv_shuffle)",
    "LayerNormalization": "the gradient builder needs its Mean and InvStdDev outputs (rewrite: layernorm_outputs)",
    **{op: _NO_BUILDER for op in (
        "PRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
        "InstanceNormalization", "LpNormalization", "ReduceMax", "ReduceMin", "ReduceProd",
        "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Einsum", "CumSum", "Hardmax",
        "Sign", "Round", "Floor", "Ceil", "Mod",
    )},
}

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _is_float(types: dict, name: str) -> bool:
    elem_type = types.get(name, (0, None))[0]
    return elem_type in _FLOATS or elem_type == 0


def _has_float_constant(node: onnx.NodeProto) -> bool:
    for _, _, sub in subgraphs(node):
        for _, g in iter_graphs(sub):
            if any(t.data_type in _FLOATS for t in g.initializer):
                return True
            if any(n.op_type == "Constant" and n.attribute and n.attribute[0].t.data_type in _FLOATS for n in g.node):
                return True
    return False


def _from_weights(graph: onnx.GraphProto, types: dict) -> set[int]:
    live = {t.name for t in graph.initializer if t.data_type in _FLOATS}
    reached = set()
    for i, node in enumerate(graph.node):
        reads = set(node.input) | {n for _, _, sub in subgraphs(node) for n in all_names(sub)}
        is_weight = node.op_type == "Constant" and _is_float(types, node.output[0])
        if is_weight or reads & live or _has_float_constant(node):
            reached.add(i)
            live |= {o for o in node.output if o and _is_float(types, o)}
    return reached


def _to_outputs(graph: onnx.GraphProto, types: dict) -> set[int]:
    needed = {v.name for v in graph.output if _is_float(types, v.name)}
    reached = set()
    for i in reversed(range(len(graph.node))):
        node = graph.node[i]
        if needed & set(node.output):
            reached.add(i)
            needed |= set(node.input) | {n for _, _, sub in subgraphs(node) for n in all_names(sub)}
    return reached


def unsupported_gradient_ops(model: onnx.ModelProto) -> list[str]:
    """Op types on the gradient path with no ORT 1.19.2 gradient or CPU gradient kernel.

    Reasons are in ``GRADIENT_BLOCKERS[op]``. Run it after ``prepare_for_training`` to see
    what the rewrites could not remove.
    """
    graph = model.graph
    types = value_types(model)
    path = _from_weights(graph, types) & _to_outputs(graph, types)
    found: list[str] = []
    for i in sorted(path):
        node = graph.node[i]
        complete_layernorm = node.op_type == "LayerNormalization" and len([o for o in node.output if o]) == 3
        blocked = node.op_type in GRADIENT_BLOCKERS and not node.domain and not complete_layernorm
        if blocked and node.op_type not in found:
            found.append(node.op_type)
    return found
