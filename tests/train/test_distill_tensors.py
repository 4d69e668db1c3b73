import numpy as np
import pytest
from onnx import TensorProto, helper

from inq_onnx.data import Samples
from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.distill_tensors import auto_tensors, check_teacher_has, layer_outputs, spread
from inq_onnx.train.feeder import with_outputs
from inq_onnx.train.losses import DistillTerm
from inq_onnx.train.options import DistillTensors, TrainOptions
from inq_onnx.train.setup import distill_tensor_names, loss_spec, teacher_mean_squares
from tests.conftest import make_model, tensor
from tests.train.train_helpers import run

F = TensorProto.FLOAT


def _chain(layers: int = 6):
    """x -> [Conv -> Mul(scale) -> Add(bias) -> Relu] * layers -> y (= the last Relu, doubled), and a state output."""
    rng = np.random.default_rng(0)
    nodes, inits, name = [], [], "x"
    for k in range(layers):
        inits += [tensor(f"w{k}", rng.normal(size=(2, 2, 1, 1)).astype(np.float32) * 0.5),
                  tensor(f"s{k}", np.full((1, 2, 1, 1), 1.5, np.float32)), tensor(f"b{k}", np.full((1, 2, 1, 1), 0.1, np.float32))]
        nodes += [helper.make_node("Conv", [name, f"w{k}"], [f"c{k}"]), helper.make_node("Mul", [f"c{k}", f"s{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"]), helper.make_node("Relu", [f"a{k}"], [f"r{k}"])]
        name = f"r{k}"
    nodes += [helper.make_node("Add", [name, name], ["y"]), helper.make_node("Identity", ["a0"], ["state"])]
    outputs = [helper.make_tensor_value_info("y", F, ["N", 2, 3, 3]), helper.make_tensor_value_info("state", F, ["N", 2, 3, 3])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 2, 3, 3])], outputs, inits)


def test_layer_outputs_are_the_pre_activation_maps_after_the_affine_chain():
    assert layer_outputs(_chain()) == [f"a{k}" for k in range(6)]


def test_spread_picks_even_depths_and_keeps_short_lists():
    assert spread([f"t{k}" for k in range(10)], 4) == ["t2", "t4", "t5", "t7"]
    assert spread(["a", "b"], 4) == ["a", "b"]


def test_auto_skips_graph_outputs_and_names_the_teacher_lacks():
    model = _chain()
    assert auto_tensors(model, model, count=2) == ["a2", "a3"]
    teacher = make_model([n for n in model.graph.node if n.output[0] != "a2"] + [helper.make_node("Identity", ["m2"], ["a2x"])],
                         list(model.graph.input), list(model.graph.output), list(model.graph.initializer))
    assert "a2" not in auto_tensors(model, teacher, count=6)


def test_named_tensors_must_be_computed_by_the_teacher():
    check_teacher_has(_chain(), ("a3", "y"))
    with pytest.raises(InvalidOptionError, match="not computed by the float model"):
        check_teacher_has(_chain(), ("a3", "nope"))


def test_every_float_output_counts_by_default_for_distillation_and_none_with_labels():
    model = _chain()
    names = lambda **kw: distill_tensor_names(TrainOptions(**kw), *_kind(kw.pop("loss", "distill")), model, model)
    assert names() == ("y", "state")
    assert names(distill_tensors="none") == ()
    assert names(distill_tensors="auto") == ("y", "state", "a1", "a2", "a3", "a4")
    assert names(distill_tensors="a3,m1") == ("y", "state", "a3", "m1")
    assert names(loss="cross-entropy") == ()


def _kind(choice):
    from inq_onnx.train.setup import LOSS_KINDS
    from inq_onnx.train.options import LossChoice

    return (LOSS_KINDS[LossChoice(choice)],)


def test_loss_spec_scales_each_term_by_the_teachers_mean_square():
    model = _chain()
    x = np.random.default_rng(1).normal(size=(20, 2, 3, 3)).astype(np.float32)
    train = Samples({"x": x}, None, "test")
    spec = loss_spec(TrainOptions(distill_tensors=("a3",)), train, model, {})
    y, state, a3 = run(with_outputs(model, ("a3",)), {"x": x})[:3]
    assert spec.output is None and [t.tensor for t in spec.distill] == ["y", "state", "a3"]
    assert spec.scale == spec.distill[0].scale
    squares = teacher_mean_squares(model, train, ("y", "state", "a3"), {})
    np.testing.assert_allclose([squares["y"], squares["state"], squares["a3"]],
                               [np.mean(y.astype(np.float64) ** 2), np.mean(state.astype(np.float64) ** 2),
                                np.mean(a3.astype(np.float64) ** 2)], rtol=1e-6)
    assert spec.distill[2] == DistillTerm("a3", pytest.approx(squares["a3"], rel=1e-6))


def test_distill_tensors_option_parses_choices_and_names():
    assert TrainOptions(distill_tensors="auto").distill_tensors is DistillTensors.AUTO
    assert TrainOptions(distill_tensors="a, b").distill_tensors == ("a", "b")
    assert TrainOptions(distill_tensors="a,b").as_dict()["distill_tensors"] == ["a", "b"]
    with pytest.raises(InvalidOptionError, match="no distillation tensor"):
        TrainOptions(distill_tensors=",")


def test_the_feeder_gives_each_target_input_the_teachers_value_of_its_tensor():
    from inq_onnx.train.feeder import Feeder
    from inq_onnx.train.losses import resolve_loss

    model = _chain()
    x = np.random.default_rng(2).normal(size=(6, 2, 3, 3)).astype(np.float32)
    loss = resolve_loss(model, loss_spec(TrainOptions(distill_tensors=("a3",)), Samples({"x": x}, None, "t"), model, {}))
    assert loss.teacher_tensors == ("y", "state", "a3")
    step_inputs = ("x", loss.extra_input, "teacher.state", "teacher.a3")
    feeder = Feeder(Samples({"x": x}, None, "t"), loss, step_inputs, teacher_model=model, pins={})
    got = feeder.feeds(np.array([1, 4]))
    want = run(with_outputs(model, ("a3",)), {"x": x[[1, 4]]})
    np.testing.assert_array_equal(got[0], x[[1, 4]])
    for value, expected in zip(got[1:], want):
        np.testing.assert_array_equal(value, expected)
