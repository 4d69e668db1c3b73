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

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        out = _gu.generate_graph_name(f"inq_loss.{op.lower()}")
        self.base.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _const(self, value, elem_type: int = onnx.TensorProto.FLOAT) -> str:
        name = _gu.generate_graph_name("inq_loss.const")
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        self.base.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def _elem_type(self, output: str) -> int:
        return _gu.get_output_from_output_name(self.base, output).type.tensor_type.elem_type

    def _add_input_like(self, output: str, elem_type: int | None = None, drop_axis: int | None = None) -> str:
        value = onnx.ValueInfoProto()
        value.CopyFrom(_gu.get_output_from_output_name(self.base, output))
        value.name = self.loss.extra_input
        if elem_type is not None:
            value.type.tensor_type.elem_type = elem_type
        dims = value.type.tensor_type.shape.dim
        if drop_axis is not None and len(dims) > drop_axis:
            del dims[drop_axis]
        self.base.graph.input.append(value)
        return value.name

    def _log(self, x: str, elem_type: int) -> str:
        return self._node("Log", [self._node("Add", [x, self._const(self.loss.eps, elem_type)])])


class MseLoss(_LossBlock):
    """mean((output - target)^2) / scale."""

    def build(self, output: str) -> str:
        target = self._add_input_like(output)
        diff = self._node("Sub", [output, target])
        loss = self._node("ReduceMean", [self._node("Mul", [diff, diff])], keepdims=0)
        if self.loss.scale != 1.0:
            loss = self._node("Mul", [loss, self._const(1.0 / self.loss.scale, self._elem_type(output))])
        return loss


class CrossEntropyLoss(_LossBlock):
    """SoftmaxCrossEntropyLoss on logits, or on log(p + eps) when the output holds
    probabilities: softmax(log(p + eps)) is p + eps renormalised, so that is the NLL of p."""

    def build(self, output: str) -> str:
        labels = self._add_input_like(output, onnx.TensorProto.INT64, drop_axis=1)
        scores = self._log(output, self._elem_type(output)) if self.loss.probabilities else output
        loss = _gu.generate_graph_name("inq_loss.cross_entropy")
        self.base.graph.node.append(helper.make_node(
            "SoftmaxCrossEntropyLoss", [scores, labels], [loss, _gu.generate_graph_name("inq_loss.log_prob")],
            name=loss, reduction="mean",
        ))
        return loss


class KlLoss(_LossBlock):
    """T^2 * mean over positions of sum_c t * (log t - log q), classes on axis 1;
    t, q = softmax(teacher / T), softmax(output / T) for logits, or taken as given."""

    def _log_and_prob(self, x: str, elem_type: int) -> tuple[str, str]:
        if self.loss.probabilities:
            return self._log(x, elem_type), x
        if self.loss.temperature != 1.0:
            x = self._node("Div", [x, self._const(self.loss.temperature, elem_type)])
        return self._node("LogSoftmax", [x], axis=1), self._node("Softmax", [x], axis=1)

    def _sum_classes(self, x: str) -> str:
        if self.loss.opset >= 13:
            return self._node("ReduceSum", [x, self._const([1], onnx.TensorProto.INT64)], keepdims=0)
        return self._node("ReduceSum", [x], axes=[1], keepdims=0)

    def build(self, output: str) -> str:
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
