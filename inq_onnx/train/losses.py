"""Which loss to train with, on which output: typed options, resolved against a model.

The onnxblock graphs that compute them live in ``loss_blocks`` (built in the child process).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import onnx

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.graph.tensors import default_opset

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


class LossKind(str, enum.Enum):
    """``cross-entropy``: int64 labels. ``distill-mse``: a ``target`` of the output's shape.
    ``distill-kl``: KL divergence to a ``teacher`` tensor of the output's shape (same kind:
    logits or probabilities), with temperature for logits. Values match ``options.LossChoice``."""

    CROSS_ENTROPY = "cross-entropy"
    MSE = "distill-mse"
    KL = "distill-kl"


_EXTRA_INPUT = {LossKind.CROSS_ENTROPY: "labels", LossKind.MSE: "target", LossKind.KL: "teacher"}


@dataclass(frozen=True)
class LossSpec:
    """A loss on one float graph output (the first float output when ``output`` is None).

    ``probabilities``: whether that output is already softmaxed (None: yes when a Softmax
    makes it). Classes lie on axis 1, as in ONNX SoftmaxCrossEntropyLoss.
    """

    kind: LossKind = LossKind.MSE
    output: str | None = None
    probabilities: bool | None = None
    temperature: float = 1.0
    eps: float = 1e-7
    scale: float = 1.0  # mse is divided by it: the teacher's mean square makes it scale-free

    def __post_init__(self):
        object.__setattr__(self, "kind", LossKind(self.kind))
        if not self.temperature > 0 or not 0 < self.eps < 1:
            raise InvalidOptionError(
                "loss temperature must be > 0 and eps in (0, 1)", "use e.g. temperature=1, eps=1e-7"
            )


@dataclass(frozen=True)
class ResolvedLoss:
    """A LossSpec tied to a model: output name, its rank, and the extra input to feed."""

    kind: LossKind
    output: str
    probabilities: bool
    temperature: float
    eps: float
    extra_input: str
    rank: int | None
    opset: int
    scale: float = 1.0

    def to_json(self) -> dict:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict) -> "ResolvedLoss":
        return cls(**{**data, "kind": LossKind(data["kind"])})


def _made_by_softmax(graph: onnx.GraphProto, name: str) -> bool:
    producers = {o: n for n in graph.node for o in n.output}
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return name in producers and producers[name].op_type == "Softmax"


def pick_loss_output(model: onnx.ModelProto, name: str | None = None) -> onnx.ValueInfoProto:
    """The named graph output, or the first float one; it must be float."""
    outputs = list(model.graph.output)
    floats = [v for v in outputs if v.type.tensor_type.elem_type in _FLOATS]
    if name is None:
        if not floats:
            raise UnsupportedModelError(
                "the model has no float output to put a loss on", "add one, or pick another model"
            )
        return floats[0]
    chosen = [v for v in outputs if v.name == name]
    if not chosen or chosen[0] not in floats:
        raise InvalidOptionError(
            f"loss output '{name}' is not a float graph output",
            f"choose one of {[v.name for v in floats]}",
        )
    return chosen[0]


def class_count(model: onnx.ModelProto, name: str | None = None) -> int | None:
    """The static size of the class axis (1) of the loss output, or None when unknown."""
    try:
        output = pick_loss_output(model, name)
    except (InvalidOptionError, UnsupportedModelError):
        return None  # reported where the loss is built
    dims = output.type.tensor_type.shape.dim
    if len(dims) < 2 or not dims[1].HasField("dim_value") or dims[1].dim_value <= 0:
        return None
    return int(dims[1].dim_value)


def resolve_loss(model: onnx.ModelProto, spec: LossSpec) -> ResolvedLoss:
    """Tie ``spec`` to ``model``: pick the output, detect probabilities, name the extra input."""
    output = pick_loss_output(model, spec.output)
    shape = output.type.tensor_type.shape
    rank = len(shape.dim) if output.type.tensor_type.HasField("shape") else None
    probabilities = _made_by_softmax(model.graph, output.name) if spec.probabilities is None else spec.probabilities
    opset = default_opset(model)
    if spec.kind is not LossKind.MSE and rank is not None and rank < 2:
        raise UnsupportedModelError(
            f"output '{output.name}' has rank {rank}: no class axis", "use the distill-mse loss"
        )
    if spec.kind is LossKind.KL and probabilities and spec.temperature != 1.0:
        raise InvalidOptionError(
            "a temperature needs logits, but the loss output holds probabilities", "use temperature=1"
        )
    if spec.kind is LossKind.KL and opset < 13 and (rank is None or rank > 2):
        raise UnsupportedModelError(
            "the distill-kl loss on a rank > 2 output needs opset 13", "convert the model to opset 13"
        )
    graph = model.graph
    taken = {v.name for v in list(graph.input) + list(graph.output)} | {t.name for t in graph.initializer}
    taken |= {o for n in graph.node for o in n.output}
    extra, k = _EXTRA_INPUT[spec.kind], 0
    while extra in taken:
        k += 1
        extra = f"{_EXTRA_INPUT[spec.kind]}_{k}"
    return ResolvedLoss(spec.kind, output.name, probabilities, spec.temperature, spec.eps, extra, rank, opset,
                        spec.scale)
