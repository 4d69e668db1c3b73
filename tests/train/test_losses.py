import pytest
from onnx import TensorProto, helper

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.train.losses import LossKind, LossSpec, ResolvedLoss, pick_loss_output, resolve_loss


def _model(first_int=True, softmax=True, rank=2):
    shape = [4, 3] if rank == 2 else [4]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"])]
    nodes += [helper.make_node("Softmax", ["logits"], ["sm"]), helper.make_node("Identity", ["sm"], ["probs"])]
    nodes += [helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0)]
    outputs = [helper.make_tensor_value_info("probs" if softmax else "logits", TensorProto.FLOAT, shape)]
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [4])
    outputs = [label] + outputs if first_int else outputs + [label]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2]),
              helper.make_tensor_value_info("target", TensorProto.FLOAT, shape)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [helper.make_tensor("W", TensorProto.FLOAT, [2, 3], [0.0] * 6)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_first_float_output_is_chosen_past_an_int64_one():
    assert pick_loss_output(_model()).name == "probs"


def test_naming_a_non_float_output_raises():
    with pytest.raises(InvalidOptionError, match="'label' is not a float graph output"):
        pick_loss_output(_model(), "label")


def test_probabilities_are_detected_through_identity():
    assert resolve_loss(_model(), LossSpec(kind="cross-entropy")).probabilities is True
    assert resolve_loss(_model(softmax=False), LossSpec(kind="cross-entropy")).probabilities is False
    assert resolve_loss(_model(), LossSpec(kind="distill-kl", probabilities=False)).probabilities is False


def test_extra_input_name_avoids_existing_names():
    resolved = resolve_loss(_model(), LossSpec(kind=LossKind.MSE))
    assert resolved.extra_input == "target_1"
    assert resolve_loss(_model(), LossSpec(kind="cross-entropy")).extra_input == "labels"


def test_bad_combinations_raise():
    with pytest.raises(InvalidOptionError, match="temperature"):
        resolve_loss(_model(), LossSpec(kind="distill-kl", temperature=2.0))
    with pytest.raises(UnsupportedModelError, match="no class axis"):
        resolve_loss(_model(rank=1), LossSpec(kind="cross-entropy"))
    with pytest.raises(InvalidOptionError):
        LossSpec(temperature=0)
    with pytest.raises(ValueError):
        LossSpec(kind="hinge")


def test_resolved_loss_round_trips_through_json():
    resolved = resolve_loss(_model(), LossSpec(kind="distill-kl"))
    assert ResolvedLoss.from_json(resolved.to_json()) == resolved
