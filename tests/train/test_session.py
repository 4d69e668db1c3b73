import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.errors import TrainingError
from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.session import TrainingSession

RNG = np.random.default_rng(0)
W, B = RNG.normal(size=(4, 3)).astype(np.float32), RNG.normal(size=3).astype(np.float32)
X, T = RNG.normal(size=(8, 4)).astype(np.float32), RNG.normal(size=(8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return TrainingSession(build_artifacts(model, trainable=["B", "W"], folder=tmp_path_factory.mktemp("a")))


def test_gradients_are_zero_before_any_step(tmp_path):
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 3])],
                              [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fresh = TrainingSession(build_artifacts(model, trainable=["W"], folder=tmp_path))
    np.testing.assert_array_equal(fresh.gradients()["W"], np.zeros_like(W))


def test_gradients_match_the_numpy_reference(session):
    session.set_parameters({"W": W, "B": B})
    session.reset_grad()
    loss = session.train_step(X, T)
    residual = 2 * (X @ W + B - T) / T.size
    assert loss == pytest.approx(np.mean((X @ W + B - T) ** 2), rel=1e-6)
    grads = session.gradients()
    np.testing.assert_allclose(grads["W"], X.T @ residual, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads["B"], residual.sum(0), rtol=1e-5, atol=1e-7)


def test_gradients_accumulate_until_reset(session):
    session.set_parameters({"W": W, "B": B})
    session.reset_grad()
    session.train_step(X, T)
    once = session.gradients()["W"]
    session.train_step(X, T)
    np.testing.assert_allclose(session.gradients()["W"], 2 * once, rtol=1e-6)


def test_parameters_are_copies_and_writes_take_effect(session):
    session.set_parameters({"W": W, "B": B})
    before = session.parameters()
    session.set_parameters({"B": B + 1})
    np.testing.assert_array_equal(before["B"], B)
    np.testing.assert_array_equal(session.parameters()["B"], B + 1)
    assert session.eval_step(X, T) == pytest.approx(np.mean((X @ W + B + 1 - T) ** 2), rel=1e-6)


def test_flat_buffer_follows_the_training_model_order(session):
    session.set_parameters({"W": W, "B": B})
    assert set(session.order) == {"W", "B"}
    flat = session.flat_parameters()
    expected = np.concatenate([{"W": W, "B": B}[name].ravel() for name in session.order])
    np.testing.assert_array_equal(flat, expected)
    session.set_flat_parameters(flat * 2)
    np.testing.assert_array_equal(session.parameters()["W"], 2 * W)


def test_gradient_op_without_cpu_kernel_raises_on_open(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Unsqueeze", ["h", "axes"], ["h4"]),
             helper.make_node("Resize", ["h4", "", "scales"], ["y"], mode="nearest")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16, 6])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([0, 1]), "axes"),
         numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    artifacts = build_artifacts(model, trainable=["W"], folder=tmp_path)
    with pytest.raises(TrainingError, match=r"\(NOT_IMPLEMENTED : Could not find an implementation for ResizeGrad"):
        TrainingSession(artifacts)
