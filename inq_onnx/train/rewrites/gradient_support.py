"""Which ops on the gradient path ORT 1.19.2 (CPU) cannot train through, known up front.

The path is every node that both depends on a float constant (a weight) and feeds a float
graph output; values that are not float (shapes, indices) carry no gradient and stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import onnx

from inq_onnx.graph.tensors import all_names, default_opset, iter_graphs, subgraphs
from inq_onnx.train.rewrites._graph import value_types

_NO_BUILDER = "no gradient builder"
# Why each op cannot be trained through as it is. Measured on ORT 1.19.2 CPU by
# bench/gradient_blockers.py (each op alone after a Conv: generate_artifacts, one train step),
# except Loop and Scan, which are not measured and assumed to fail like If.
GRADIENT_BLOCKERS: dict[str, str] = {
    "If": "aborts the gradient builder with SIGABRT",
    "Loop": "control flow on the gradient path (not measured; assumed to fail like If)",
    "Scan": "control flow on the gradient path (not measured; assumed to fail like If)",
    "Resize": "no CPU kernel for ResizeGrad",
    "ConvTranspose": "no CPU kernel for ConvTransposeGrad",
    "LayerNormalization": "the gradient builder needs its Mean and InvStdDev outputs declared",
    "MeanVarianceNormalization": "ONNX shape inference fails on its expansion in the gradient builder",
    **{op: _NO_BUILDER for op in (
        "HardSigmoid", "HardSwish", "PRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish",
        "ThresholdedRelu", "Shrink", "Atan", "Sign", "Round", "Floor", "Ceil", "Mod", "Hardmax",
        "GlobalMaxPool", "GlobalLpPool", "LpPool", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
        "ReduceSumSquare", "ReduceLogSum", "InstanceNormalization", "GroupNormalization",
        "LpNormalization", "LRN", "DepthToSpace", "SpaceToDepth", "CumSum", "Einsum", "Upsample",
    )},
}

# The pass of prepare_for_training that removes each blocker, and when it can.
REWRITES: dict[str, tuple[str, str]] = {
    "If": ("fold_if", "when its condition is fixed by the training input shapes or by --pin INPUT=VALUE"),
    "LayerNormalization": ("layernorm_outputs", ""),
    "HardSigmoid": ("hardsigmoid_to_minmax", ""),
    "HardSwish": ("hardsigmoid_to_minmax", ""),
    "Resize": ("resize_to_repeat", "for a nearest Resize by integer factors, with static shapes"),
    "Upsample": ("clip_opset_bump + resize_to_repeat", "for a nearest Upsample by integer factors"),
    "ConvTranspose": ("convtranspose_to_conv_shuffle", "for kernel == stride, no pads, group 1"),
    "GlobalMaxPool": ("globalmaxpool_to_maxpool", "with a static spatial size"),
    "ReduceMax": ("softmax_pattern_to_softmax or reduce_to_maxpool", "with static shapes and axes"),
    "ReduceMin": ("reduce_to_maxpool", "with static shapes and axes"),
    "InstanceNormalization": ("instancenorm_to_moments", ""),
    "GroupNormalization": ("groupnorm_to_moments", "with a static input shape"),
    "MeanVarianceNormalization": ("mvn_to_moments", ""),
    "LRN": ("lrn_to_avgpool", "with a static input shape"),
    "LpNormalization": ("lpnorm_to_reduce", ""),
    **{op: ("reduce_to_reducesum", "") for op in ("ReduceL1", "ReduceSumSquare", "ReduceLogSum")},
    "DepthToSpace": ("depth_to_space_to_transpose", "with a static input shape"),
    "SpaceToDepth": ("depth_to_space_to_transpose", "with a static input shape"),
    **{op: ("activations_to_primitives", "") for op in (
        "PRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu")},
}


class GradientStatus(str, Enum):
    TRAINS = "trains"
    REWRITE = "trains through a rewrite"
    BLOCKS = "blocks training"


@dataclass(frozen=True)
class OpGradient:
    """How retraining gets through one op type on the gradient path."""

    op: str
    status: GradientStatus
    rewrite: str = ""  # the pass, when status is REWRITE (or when it exists but did not apply)
    reason: str = ""  # why the op blocks as it is
    way_out: str = ""  # what the user can do, when status is BLOCKS

    def describe(self, *, way_out: bool = True) -> str:
        if self.status is GradientStatus.TRAINS:
            return f"{self.op}: trains"
        if self.status is GradientStatus.REWRITE:
            return f"{self.op}: trains through a rewrite ({self.rewrite})"
        return f"{self.op}: blocks training ({self.reason})" + (f"; {self.way_out}" if way_out else "")

    def to_json(self) -> dict:
        return {"op": self.op, "status": self.status.value, "rewrite": self.rewrite or None,
                "reason": self.reason or None, "way_out": self.way_out or None}


NO_REWRITE_WAY_OUT = ("quantize one shot without --data, or run `inq-onnx step` and retrain the model in "
                      "another framework between steps")


def way_out(op: str) -> str:
    """What a user can do about ``op`` blocking training, with options that exist."""
    if op == "If":
        return "pin the inputs its condition reads with --pin INPUT=VALUE (e.g. --pin sr=16000)"
    if op in REWRITES and REWRITES[op][1]:
        name, when = REWRITES[op]
        return f"{name} applies only {when}; otherwise {NO_REWRITE_WAY_OUT}"
    return NO_REWRITE_WAY_OUT


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


def _path_nodes(model: onnx.ModelProto, *, carrying: bool = False) -> list[onnx.NodeProto]:
    """Nodes between float weights and float outputs; ``carrying``: only those with a float output
    (a Shape or a Range on the path carries no gradient)."""
    graph = model.graph
    types = value_types(model)
    nodes = [graph.node[i] for i in sorted(_from_weights(graph, types) & _to_outputs(graph, types))]
    return [n for n in nodes if any(_is_float(types, o) for o in n.output if o)] if carrying else nodes


def _blocks(node: onnx.NodeProto) -> bool:
    complete_layernorm = node.op_type == "LayerNormalization" and len([o for o in node.output if o]) == 3
    return node.op_type in GRADIENT_BLOCKERS and not node.domain and not complete_layernorm


def gradient_path_ops(model: onnx.ModelProto) -> list[str]:
    """Op types on the gradient path (domain-qualified outside the default domain), in graph order."""
    found: list[str] = []
    for node in _path_nodes(model, carrying=True):
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        if op not in found and op != "Constant":
            found.append(op)
    return found


def unsupported_gradient_ops(model: onnx.ModelProto) -> list[str]:
    """Op types on the gradient path with no ORT 1.19.2 gradient or CPU gradient kernel.

    Reasons are in ``GRADIENT_BLOCKERS[op]``. Run it after ``prepare_for_training`` to see
    what the rewrites could not remove.
    """
    found: list[str] = []
    for node in _path_nodes(model):
        if _blocks(node) and node.op_type not in found:
            found.append(node.op_type)
    return found


def _rewritten_anyway(model: onnx.ModelProto, op: str) -> str:
    """The pass that rewrites an op ORT could train as it is, for exactness or for its opset."""
    if op == "BatchNormalization":
        return "batchnorm_to_affine: running statistics, not batch statistics"
    if op == "Clip" and default_opset(model) < 12:
        return "clip_opset_bump: its gradient needs opset 12"
    return ""


def gradient_report(model: onnx.ModelProto, prepared: onnx.ModelProto | None = None) -> list[OpGradient]:
    """For each op type on the gradient path of ``model``: trains, trains through a rewrite, or blocks.

    ``prepared`` is ``model`` after ``prepare_for_training``: an op that blocks in ``model`` and
    no longer in ``prepared`` trains through its rewrite. Without it, a blocker with a rewrite
    is reported as trained through it, under the rewrite's condition (which the caller could
    not check).
    """
    left = set(unsupported_gradient_ops(prepared)) if prepared is not None else None
    blocking = set(unsupported_gradient_ops(model))
    report = []
    for op in gradient_path_ops(model):
        if op not in blocking:
            rewrite = _rewritten_anyway(model, op)
            status = GradientStatus.REWRITE if rewrite else GradientStatus.TRAINS
            report.append(OpGradient(op, status, rewrite=rewrite))
            continue
        reason = GRADIENT_BLOCKERS[op]
        name, when = REWRITES.get(op, ("", ""))
        if name and (left is None or op not in left):
            label = name if left is not None or not when else f"{name}, {when}"
            report.append(OpGradient(op, GradientStatus.REWRITE, rewrite=label, reason=reason))
        else:
            report.append(OpGradient(op, GradientStatus.BLOCKS, rewrite=name, reason=reason, way_out=way_out(op)))
    for op in sorted((left or set()) - blocking):  # made by a rewrite that did not finish the job
        report.append(OpGradient(op, GradientStatus.BLOCKS, reason=GRADIENT_BLOCKERS[op], way_out=way_out(op)))
    return report


def blocking(report: list[OpGradient]) -> list[OpGradient]:
    """The entries of ``report`` that block training."""
    return [entry for entry in report if entry.status is GradientStatus.BLOCKS]


def training_report(model: onnx.ModelProto) -> list[OpGradient]:
    """``gradient_report`` for a model as the user has it, before any training shapes are known.

    When every input has a static shape the rewrites are run to see which apply; otherwise
    each rewrite is reported with the condition it needs.
    """
    from inq_onnx.train.rewrites.prepare import prepare_for_training

    if not unsupported_gradient_ops(model):
        return gradient_report(model)
    try:
        prepared, _ = prepare_for_training(model, input_shapes={})
    except Exception:  # noqa: BLE001 - no static shapes (or a branch that will not run): report the conditions
        return gradient_report(model)
    return gradient_report(model, prepared)
