"""The loss graphs, as onnxblock Blocks appended to the model by ``generate_artifacts``.

Imported only where the ORT training API is loaded (the artifacts child process, tests).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.train.losses import LossKind, ResolvedLoss
from inq_onnx.train.ort_training import load_training_api

_api = load_training_api()
_blocks = _api.onnxblock.blocks
_gu = _api.onnxblock._graph_utils  # generate_graph_name / get_output_from_output_name: no public twin


class _LossBlock(_blocks.Block):
    """Shared plumbing: emit nodes and constants with fresh names into the base model."""

    def __init__(self, loss: ResolvedLoss):
        super().__init__()
        self.loss = loss
        self._inferred: dict[str, onnx.ValueInfoProto] = {}

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        out = _gu.generate_graph_name(f"inq_loss.{op.lower()}")
        self.base.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _const(self, value, elem_type: int = onnx.TensorProto.FLOAT) -> str:
        name = _gu.generate_graph_name("inq_loss.const")
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        self.base.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def _value(self, name: str) -> onnx.ValueInfoProto:
        """A graph output's value info, or an intermediate tensor's (shape inference on the base)."""
        try:
            return _gu.get_output_from_output_name(self.base, name)
        except LookupError:
            if name not in self._inferred:
                inferred = onnx.shape_inference.infer_shapes(self.base)
                self._inferred.update({v.name: v for v in inferred.graph.value_info})
            if name not in self._inferred:
                raise LookupError(f"no type is known for tensor '{name}'") from None
            return self._inferred[name]

    def _elem_type(self, output: str) -> int:
        return self._value(output).type.tensor_type.elem_type

    def _add_input_like(self, output: str, elem_type: int | None = None, drop_axis: int | None = None,
                        name: str | None = None) -> str:
        value = onnx.ValueInfoProto()
        value.CopyFrom(self._value(output))
        value.name = name or self.loss.extra_input
        if elem_type is not None:
            value.type.tensor_type.elem_type = elem_type
        dims = value.type.tensor_type.shape.dim
        if drop_axis is not None and len(dims) > drop_axis:
            del dims[drop_axis]
        self.base.graph.input.append(value)
        return value.name

    def _log(self, x: str, elem_type: int) -> str:
        return self._node("Log", [self._node("Add", [x, self._const(self.loss.eps, elem_type)])])


    def _mse(self, tensor: str, target: str, scale: float) -> str:
        """mean((tensor - target)^2) / scale, with ``target`` a new input shaped like ``tensor``."""
        target = self._add_input_like(tensor, name=target)
        diff = self._node("Sub", [tensor, target])
        loss = self._node("ReduceMean", [self._node("Mul", [diff, diff])], keepdims=0)
        if scale != 1.0:
            loss = self._node("Mul", [loss, self._const(1.0 / scale, self._elem_type(tensor))])
        return loss

    def _mean(self, terms: list[str], elem_type: int) -> str:
        total = terms[0]
        for term in terms[1:]:
            total = self._node("Add", [total, term])
        return total if len(terms) == 1 else self._node("Mul", [total, self._const(1.0 / len(terms), elem_type)])

    def _distill_terms(self, tensors: tuple[str, ...]) -> list[str]:
        if tuple(t.tensor for t in self.loss.distill) != tuple(tensors):
            raise ValueError(f"loss inputs {tensors} do not match the distillation terms {self.loss.distill}")
        return [self._mse(t.tensor, t.target, t.scale) for t in self.loss.distill]

    def build(self, output: str, *distill: str) -> str:
        """The output's loss plus the mean of the distillation terms (``MseLoss``: the mean of all)."""
        main, terms = self.main(output), self._distill_terms(distill)
        if not terms:
            return main
        return self._node("Add", [main, self._mean(terms, self._elem_type(output))])

    def main(self, output: str) -> str:
        raise NotImplementedError


class MseLoss(_LossBlock):
    """The mean over terms of mean((tensor - teacher)^2) / scale: the output's, then each
    distillation term's."""

    def build(self, output: str, *distill: str) -> str:
        terms = [self.main(output)] + self._distill_terms(distill)
        return self._mean(terms, self._elem_type(output))

    def main(self, output: str) -> str:
        return self._mse(output, self.loss.extra_input, self.loss.scale)


def _to_axis_1(block: _LossBlock, x: str, axis: int, rank: int | None) -> str:
    """``x`` with its class axis moved to axis 1 (SoftmaxCrossEntropyLoss's layout)."""
    if axis == 1:
        return x
    if rank is None:
        raise ValueError("moving the class axis needs the output's rank")
    perm = [0, axis] + [a for a in range(1, rank) if a != axis]
    return block._node("Transpose", [x], perm=perm)


class CrossEntropyLoss(_LossBlock):
    """SoftmaxCrossEntropyLoss on logits, or on log(p + eps) when the output holds
    probabilities: softmax(log(p + eps)) is p + eps renormalised, so that is the NLL of p.
    Classes on ``class_axis`` (moved to axis 1 first); labels have the output's shape without it."""

    def main(self, output: str) -> str:
        axis = self.loss.class_axis
        labels = self._add_input_like(output, onnx.TensorProto.INT64, drop_axis=axis)
        scores = self._log(output, self._elem_type(output)) if self.loss.probabilities else output
        scores = _to_axis_1(self, scores, axis, self.loss.rank)
        loss = _gu.generate_graph_name("inq_loss.cross_entropy")
        self.base.graph.node.append(helper.make_node(
            "SoftmaxCrossEntropyLoss", [scores, labels], [loss, _gu.generate_graph_name("inq_loss.log_prob")],
            name=loss, reduction="mean",
        ))
        return loss


class KlLoss(_LossBlock):
    """T^2 * mean over positions of sum_c t * (log t - log q), classes on ``class_axis``;
    t, q = softmax(teacher / T), softmax(output / T) for logits, or taken as given."""

    def _log_and_prob(self, x: str, elem_type: int) -> tuple[str, str]:
        if self.loss.probabilities:
            return self._log(x, elem_type), x
        if self.loss.temperature != 1.0:
            x = self._node("Div", [x, self._const(self.loss.temperature, elem_type)])
        axis = self.loss.class_axis
        return self._node("LogSoftmax", [x], axis=axis), self._node("Softmax", [x], axis=axis)

    def _sum_classes(self, x: str) -> str:
        axis = self.loss.class_axis
        if self.loss.opset >= 13:
            return self._node("ReduceSum", [x, self._const([axis], onnx.TensorProto.INT64)], keepdims=0)
        return self._node("ReduceSum", [x], axes=[axis], keepdims=0)

    def main(self, output: str) -> str:
        if self.loss.needs_opset_raise:
            raise ValueError(f"KL over axis {self.loss.class_axis} of a rank-{self.loss.rank} output needs opset "
                             f"13, the graph has {self.loss.opset}: raise it first (raise_opset)")
        elem_type = self._elem_type(output)
        teacher = self._add_input_like(output)
        log_q, _ = self._log_and_prob(output, elem_type)
        log_t, t = self._log_and_prob(teacher, elem_type)
        terms = self._node("Mul", [t, self._node("Sub", [log_t, log_q])])
        loss = self._node("ReduceMean", [self._sum_classes(terms)], keepdims=0)
        if self.loss.temperature != 1.0:
            loss = self._node("Mul", [loss, self._const(self.loss.temperature**2, elem_type)])
        return loss


def loss_block(loss: ResolvedLoss) -> _LossBlock:
    """The Block computing ``loss``."""
    blocks = {LossKind.MSE: MseLoss, LossKind.CROSS_ENTROPY: CrossEntropyLoss, LossKind.KL: KlLoss}
    return blocks[loss.kind](loss)


def loss_input_names(loss: ResolvedLoss) -> list[str]:
    """The model tensors the loss block reads, in the order its ``build`` takes them."""
    return [loss.output] + [t.tensor for t in loss.distill]
