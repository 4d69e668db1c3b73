"""Which loss to train with, on which tensors: typed options, resolved against a model.

The onnxblock graphs that compute them live in ``loss_blocks`` (built in the child process).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import onnx

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.graph.tensors import default_opset
from inq_onnx.train.rewrites._graph import NameMaker

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
_PASS_THROUGH = {"Identity", "Add", "Sub", "Mul", "Div"}  # ops that keep the axis layout of their first input
KL_SOFTMAX_OPSET = 13  # Softmax/LogSoftmax normalise over one axis (not a flattened tail) from here


class LossKind(str, enum.Enum):
    """``cross-entropy``: int64 labels. ``distill-mse``: a ``target`` of the output's shape.
    ``distill-kl``: KL divergence to a ``teacher`` tensor of the output's shape (same kind:
    logits or probabilities), with temperature for logits. Values match ``options.LossChoice``."""

    CROSS_ENTROPY = "cross-entropy"
    MSE = "distill-mse"
    KL = "distill-kl"


_EXTRA_INPUT = {LossKind.CROSS_ENTROPY: "labels", LossKind.MSE: "target", LossKind.KL: "teacher"}


@dataclass(frozen=True)
class DistillTerm:
    """One more tensor matched to the float teacher: mean((student - teacher)^2) / scale.

    ``tensor`` is a graph output or an intermediate tensor of the training graph; ``target``
    the step input the teacher's value is fed to (named by ``resolve_loss``); ``scale`` the
    teacher's mean square of that tensor, which makes each term scale-free (1 / SQNR).
    """

    tensor: str
    scale: float = 1.0
    target: str = ""


@dataclass(frozen=True)
class LossSpec:
    """A loss on one float graph output (the first float output when ``output`` is None),
    plus optional distillation terms on more tensors (``distill``).

    ``probabilities``: whether that output is already softmaxed (None: yes when a Softmax
    makes it). ``class_axis``: where the classes lie for cross-entropy and KL (None: found
    by ``find_class_axis``). The loss is, for ``distill-mse``, the mean of every term
    (the output's and ``distill``'s), each divided by its teacher mean square; for the
    others, the output's loss plus the mean of the ``distill`` terms.
    """

    kind: LossKind = LossKind.MSE
    output: str | None = None
    probabilities: bool | None = None
    temperature: float = 1.0
    eps: float = 1e-7
    scale: float = 1.0  # mse is divided by it: the teacher's mean square makes it scale-free
    class_axis: int | None = None
    distill: tuple[DistillTerm, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "kind", LossKind(self.kind))
        object.__setattr__(self, "distill", tuple(t if isinstance(t, DistillTerm) else DistillTerm(t)
                                                  for t in self.distill))
        if not self.temperature > 0 or not 0 < self.eps < 1:
            raise InvalidOptionError(
                "loss temperature must be > 0 and eps in (0, 1)", "use e.g. temperature=1, eps=1e-7"
            )


@dataclass(frozen=True)
class ResolvedLoss:
    """A LossSpec tied to a model: output name, its rank, and the extra inputs to feed."""

    kind: LossKind
    output: str
    probabilities: bool
    temperature: float
    eps: float
    extra_input: str
    rank: int | None
    opset: int
    scale: float = 1.0
    class_axis: int = 1
    distill: tuple[DistillTerm, ...] = ()

    @property
    def teacher_tensors(self) -> tuple[str, ...]:
        """What the float teacher must compute for one batch: the output (unless labels are
        its target), then every distillation term's tensor."""
        first = () if self.kind is LossKind.CROSS_ENTROPY else (self.output,)
        return first + tuple(t.tensor for t in self.distill)

    @property
    def needs_opset_raise(self) -> bool:
        """KL on logits of rank > 2 with classes off the last axis needs one-axis Softmax."""
        ranked = self.rank is None or self.rank > 2
        last = self.rank is not None and self.class_axis == self.rank - 1
        return (self.kind is LossKind.KL and not self.probabilities and ranked and not last
                and self.opset < KL_SOFTMAX_OPSET)

    def to_json(self) -> dict:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict) -> "ResolvedLoss":
        terms = tuple(DistillTerm(**t) for t in data.get("distill", ()))
        return cls(**{**data, "kind": LossKind(data["kind"]), "distill": terms})


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _made_by_softmax(graph: onnx.GraphProto, name: str) -> bool:
    producers = _producers(graph)
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return name in producers and producers[name].op_type == "Softmax"


def find_class_axis(model: onnx.ModelProto, name: str, rank: int | None) -> int:
    """The class axis of tensor ``name``: the axis of the Softmax/LogSoftmax that makes it
    (through Identity and elementwise ops); else the last axis when a MatMul makes it (a
    linear layer writes its features last: [batch, time, classes]); else 1."""
    producers, opset = _producers(model.graph), default_opset(model)
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
        return axis % rank if rank else axis if axis >= 0 else 1
    if node is not None and node.op_type == "MatMul" and rank is not None and rank >= 3:
        return rank - 1
    return 1


def _check_axis(axis: int, rank: int | None, output: str) -> int:
    if rank is None:
        if axis < 0:
            raise InvalidOptionError(f"output '{output}' has no known rank for class axis {axis}",
                                     "give a non-negative class axis")
        return axis
    if not -rank <= axis < rank:
        raise InvalidOptionError(f"class axis {axis} is out of range for output '{output}' of rank {rank}",
                                 f"give an axis in 0..{rank - 1}")
    return axis % rank


def pick_loss_output(model: onnx.ModelProto, name: str | None = None) -> onnx.ValueInfoProto:
    """The named graph output, or the first float one; it must be float."""
    outputs = list(model.graph.output)
    floats = float_outputs(model)
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


def float_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Every float graph output, in order."""
    return [v for v in model.graph.output if v.type.tensor_type.elem_type in _FLOATS]


def _rank(value: onnx.ValueInfoProto) -> int | None:
    return len(value.type.tensor_type.shape.dim) if value.type.tensor_type.HasField("shape") else None


def class_count(model: onnx.ModelProto, name: str | None = None, class_axis: int | None = None) -> int | None:
    """The static size of the class axis of the loss output, or None when unknown."""
    try:
        output = pick_loss_output(model, name)
    except (InvalidOptionError, UnsupportedModelError):
        return None  # reported where the loss is built
    dims, rank = output.type.tensor_type.shape.dim, _rank(output)
    if rank is None or rank < 2:
        return None
    axis = find_class_axis(model, output.name, rank) if class_axis is None else class_axis
    if not -rank <= axis < rank or not dims[axis].HasField("dim_value") or dims[axis].dim_value <= 0:
        return None
    return int(dims[axis].dim_value)


def _taken_names(graph: onnx.GraphProto) -> set[str]:
    """Inputs, outputs, initializers and node outputs: what a new input's name must avoid."""
    taken = {v.name for v in list(graph.input) + list(graph.output)} | {t.name for t in graph.initializer}
    return taken | {o for n in graph.node for o in n.output}


def _resolve_terms(model: onnx.ModelProto, spec: LossSpec, output: str, names: NameMaker) -> tuple[DistillTerm, ...]:
    produced = {o for n in model.graph.node for o in n.output} | {v.name for v in model.graph.output}
    missing = [t.tensor for t in spec.distill if t.tensor not in produced]
    if missing:
        raise InvalidOptionError(f"distillation tensors {missing[:5]} are not computed by the training graph",
                                 "name tensors that nodes of the main graph produce (see `inq-onnx inspect`)")
    seen, terms = {output} if spec.kind is not LossKind.CROSS_ENTROPY else set(), []
    for term in spec.distill:
        if term.tensor not in seen:
            seen.add(term.tensor)
            terms.append(DistillTerm(term.tensor, term.scale, names(f"teacher.{term.tensor}")))
    return tuple(terms)


def resolve_loss(model: onnx.ModelProto, spec: LossSpec) -> ResolvedLoss:
    """Tie ``spec`` to ``model``: pick the output, detect probabilities and the class axis,
    name the extra inputs."""
    output = pick_loss_output(model, spec.output)
    rank = _rank(output)
    probabilities = _made_by_softmax(model.graph, output.name) if spec.probabilities is None else spec.probabilities
    if spec.kind is not LossKind.MSE and rank is not None and rank < 2:
        raise UnsupportedModelError(
            f"output '{output.name}' has rank {rank}: no class axis", "use the distill-mse loss"
        )
    if spec.kind is LossKind.KL and probabilities and spec.temperature != 1.0:
        raise InvalidOptionError(
            "a temperature needs logits, but the loss output holds probabilities", "use temperature=1"
        )
    axis = find_class_axis(model, output.name, rank) if spec.class_axis is None else spec.class_axis
    axis = _check_axis(axis, rank, output.name) if spec.kind is not LossKind.MSE else axis
    names = NameMaker(_taken_names(model.graph))
    extra = names(_EXTRA_INPUT[spec.kind])
    terms = _resolve_terms(model, spec, output.name, names)
    return ResolvedLoss(spec.kind, output.name, probabilities, spec.temperature, spec.eps, extra, rank,
                        default_opset(model), spec.scale, axis, terms)
