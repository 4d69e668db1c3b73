import pytest
from onnx import TensorProto, helper

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.train.losses import (
    DistillTerm, LossKind, LossSpec, ResolvedLoss, class_count, find_class_axis, pick_loss_output, resolve_loss,
)


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


def _rank3(producer: str, opset: int = 12, axis: int = 2):
    """x[2,3,5] -> MatMul W[5,4] -> [2,3,4], then a Softmax (axis), a Transpose to [2,4,3], or nothing."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z"])]
    shape = [2, 3, 4]
    if producer == "softmax":
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=axis))
    elif producer == "transpose":
        nodes.append(helper.make_node("Transpose", ["z"], ["y"], perm=[0, 2, 1]))
        shape = [2, 4, 3]
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [helper.make_tensor("W", TensorProto.FLOAT, [5, 4], [0.1] * 20)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_class_axis_is_found_from_the_softmax_a_matmul_or_else_one():
    assert find_class_axis(_rank3("softmax"), "y", 3) == 2
    assert find_class_axis(_rank3("softmax", axis=-1, opset=13), "y", 3) == 2
    assert find_class_axis(_rank3("matmul"), "y", 3) == 2  # a linear layer writes its classes last
    assert find_class_axis(_rank3("transpose"), "y", 3) == 1
    assert find_class_axis(_model(), "probs", 2) == 1


def test_kl_needs_the_opset_raise_only_off_the_last_axis_of_logits_below_13():
    assert resolve_loss(_rank3("matmul"), LossSpec(kind="distill-kl")).needs_opset_raise is False
    raised = resolve_loss(_rank3("transpose"), LossSpec(kind="distill-kl"))
    assert raised.class_axis == 1 and raised.needs_opset_raise is True
    assert resolve_loss(_rank3("transpose", opset=13), LossSpec(kind="distill-kl")).needs_opset_raise is False
    on_probs = resolve_loss(_rank3("softmax"), LossSpec(kind="distill-kl", class_axis=1))
    assert on_probs.probabilities and on_probs.needs_opset_raise is False  # no Softmax in the loss


def test_the_user_names_the_class_axis_within_the_rank():
    assert resolve_loss(_rank3("matmul"), LossSpec(kind="distill-kl", class_axis=1)).class_axis == 1
    assert resolve_loss(_rank3("matmul"), LossSpec(kind="distill-kl", class_axis=-2)).class_axis == 1
    with pytest.raises(InvalidOptionError, match="class axis 3 is out of range"):
        resolve_loss(_rank3("matmul"), LossSpec(kind="cross-entropy", class_axis=3))
    assert class_count(_rank3("matmul")) == 4 and class_count(_rank3("transpose")) == 4


def test_distillation_terms_get_fresh_target_inputs_and_round_trip():
    spec = LossSpec(kind="distill-mse", output="probs", distill=(DistillTerm("probs", 2.0), DistillTerm("logits", 3.0)))
    resolved = resolve_loss(_model(), spec)
    assert resolved.distill == (DistillTerm("logits", 3.0, "teacher.logits"),)  # the output is its own term
    assert resolved.teacher_tensors == ("probs", "logits")
    assert ResolvedLoss.from_json(resolved.to_json()) == resolved
    labelled = resolve_loss(_model(), LossSpec(kind="cross-entropy", distill=("probs",)))
    assert labelled.teacher_tensors == ("probs",) and labelled.distill[0].target == "teacher.probs"


def test_a_distillation_tensor_the_graph_does_not_make_is_refused():
    with pytest.raises(InvalidOptionError, match=r"\['nope'\] are not computed"):
        resolve_loss(_model(), LossSpec(distill=("nope",)))
