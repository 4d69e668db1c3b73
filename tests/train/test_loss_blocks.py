"""Loss graphs against numpy references, built in-process (fast; these graphs cannot abort)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.train._artifacts_child import _generate
from inq_onnx.train.artifacts import TrainingArtifacts
from inq_onnx.train.losses import LossSpec, resolve_loss
from inq_onnx.train.session import TrainingSession

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 4)).astype(np.float32)
W = RNG.normal(size=(4, 3)).astype(np.float32)
LABELS = np.array([0, 2, 1, 1, 0, 2], np.int64)
TEACHER_LOGITS = RNG.normal(size=(6, 3)).astype(np.float32)


def _model(softmax: bool) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z" if softmax else "y"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 3])],
                              [numpy_helper.from_array(W, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _session(model, spec, tmp_path) -> TrainingSession:
    onnx.save(model, tmp_path / "model.onnx")
    loss = resolve_loss(model, spec)
    result = _generate({"model": str(tmp_path / "model.onnx"), "folder": str(tmp_path), "trainable": ["W"],
                        "loss": loss.to_json()})
    paths = {k: tmp_path / f for k, f in [("training_model", "training_model.onnx"), ("eval_model", "eval_model.onnx"),
                                          ("optimizer_model", "optimizer_model.onnx"), ("checkpoint", "checkpoint")]}
    return TrainingSession(TrainingArtifacts(folder=tmp_path, loss=loss, trainable=("W",), inputs=tuple(result["inputs"]),
                                             **paths))


def _softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reference(kind, softmax, other, temperature):
    z = X.astype(np.float64) @ W
    if kind == "distill-mse":
        return np.mean(((_softmax(z) if softmax else z) - other) ** 2)
    if kind == "cross-entropy":
        p = _softmax(z)
        return -np.mean(np.log(p[np.arange(6), other] + (1e-7 if softmax else 0)))
    if softmax:
        p, t = _softmax(z), _softmax(TEACHER_LOGITS.astype(np.float64))
        return np.mean(np.sum(t * (np.log(t + 1e-7) - np.log(p + 1e-7)), axis=1))
    q, t = _softmax(z / temperature), _softmax(TEACHER_LOGITS / temperature)
    return temperature**2 * np.mean(np.sum(t * (np.log(t) - np.log(q)), axis=1))


@pytest.mark.parametrize("kind,softmax,temperature", [
    ("distill-mse", False, 1.0), ("cross-entropy", False, 1.0), ("cross-entropy", True, 1.0),
    ("distill-kl", False, 2.0), ("distill-kl", True, 1.0),
])
def test_loss_value_matches_numpy(kind, softmax, temperature, tmp_path):
    session = _session(_model(softmax), LossSpec(kind=kind, temperature=temperature), tmp_path)
    other = {"distill-mse": TEACHER_LOGITS, "cross-entropy": LABELS}.get(kind)
    if other is None:
        other = (_softmax(TEACHER_LOGITS) if softmax else TEACHER_LOGITS).astype(np.float32)
    extra = {"distill-mse": "target", "cross-entropy": "labels", "distill-kl": "teacher"}[kind]
    assert session.artifacts.inputs == ("x", extra)
    got = session.eval_step(X, other)
    assert got == pytest.approx(_reference(kind, softmax, other, temperature), rel=1e-5, abs=1e-6)


def test_kl_gradient_with_temperature_matches_the_closed_form(tmp_path):
    session = _session(_model(False), LossSpec(kind="distill-kl", temperature=2.0), tmp_path)
    session.train_step(X, TEACHER_LOGITS)
    z = X.astype(np.float64) @ W
    d_logits = 2.0 * (_softmax(z / 2.0) - _softmax(TEACHER_LOGITS / 2.0)) / 6
    np.testing.assert_allclose(session.gradients()["W"], X.T @ d_logits, rtol=1e-4, atol=1e-6)


def test_mse_is_divided_by_its_scale(tmp_path):
    scaled = _session(_model(False), LossSpec(kind="distill-mse", scale=4.0), tmp_path)
    assert scaled.eval_step(X, TEACHER_LOGITS) == pytest.approx(
        _reference("distill-mse", False, TEACHER_LOGITS, 1.0) / 4.0, rel=1e-5)


V = RNG.normal(size=(3, 2)).astype(np.float32)


def _two_output_model() -> onnx.ModelProto:
    """x -> MatMul W -> h (intermediate) -> Relu -> MatMul V -> y; and s = 0.5 h, a second output."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "V"], ["y"]), helper.make_node("Mul", ["h", "half"], ["s"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 2]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [6, 3])],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(V, "V"),
                               numpy_helper.from_array(np.float32(0.5), "half")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _two_output_session(spec, tmp_path) -> TrainingSession:
    model = _two_output_model()
    onnx.save(model, tmp_path / "model.onnx")
    loss = resolve_loss(model, spec)
    result = _generate({"model": str(tmp_path / "model.onnx"), "folder": str(tmp_path), "trainable": ["W", "V"],
                        "loss": loss.to_json()})
    paths = {k: tmp_path / f for k, f in [("training_model", "training_model.onnx"), ("eval_model", "eval_model.onnx"),
                                          ("optimizer_model", "optimizer_model.onnx"), ("checkpoint", "checkpoint")]}
    return TrainingSession(TrainingArtifacts(folder=tmp_path, loss=loss, trainable=("W", "V"),
                                             inputs=tuple(result["inputs"]), **paths))


def test_mse_over_an_output_a_second_output_and_an_intermediate_is_the_mean_of_scaled_terms(tmp_path):
    from inq_onnx.train.losses import DistillTerm

    spec = LossSpec(kind="distill-mse", scale=2.0, distill=(DistillTerm("s", 3.0), DistillTerm("h", 5.0)))
    session = _two_output_session(spec, tmp_path)
    assert session.artifacts.inputs == ("x", "target", "teacher.s", "teacher.h")
    t_y, t_s, t_h = (RNG.normal(size=shape).astype(np.float32) for shape in [(6, 2), (6, 3), (6, 3)])
    h = X.astype(np.float64) @ W
    y = np.maximum(h, 0) @ V
    expected = (np.mean((y - t_y) ** 2) / 2.0 + np.mean((0.5 * h - t_s) ** 2) / 3.0 + np.mean((h - t_h) ** 2) / 5.0) / 3
    assert session.eval_step(X, t_y, t_s, t_h) == pytest.approx(expected, rel=1e-5)
    session.train_step(X, t_y, t_s, t_h)
    d_h = (2 * (0.5 * h - t_s) * 0.5 / 3.0 / 18 + 2 * (h - t_h) / 5.0 / 18) / 3
    d_y = 2 * (y - t_y) / 2.0 / 12 / 3
    d_h += (d_y @ V.T) * (h > 0)
    np.testing.assert_allclose(session.gradients()["W"], X.T @ d_h, rtol=1e-4, atol=1e-6)


def test_cross_entropy_plus_distillation_adds_the_mean_of_the_terms(tmp_path):
    from inq_onnx.train.losses import DistillTerm

    spec = LossSpec(kind="cross-entropy", distill=(DistillTerm("y", 2.0), DistillTerm("h", 4.0)))
    session = _two_output_session(spec, tmp_path)
    labels = np.array([0, 1, 1, 0, 1, 0], np.int64)
    assert session.artifacts.inputs == ("x", "labels", "teacher.y", "teacher.h")
    t_y, t_h = RNG.normal(size=(6, 2)).astype(np.float32), RNG.normal(size=(6, 3)).astype(np.float32)
    h = X.astype(np.float64) @ W
    y = np.maximum(h, 0) @ V
    ce = -np.mean(np.log(_softmax(y)[np.arange(6), labels]))
    expected = ce + (np.mean((y - t_y) ** 2) / 2.0 + np.mean((h - t_h) ** 2) / 4.0) / 2
    assert session.eval_step(X, labels, t_y, t_h) == pytest.approx(expected, rel=1e-5)


X3 = RNG.normal(size=(2, 3, 4)).astype(np.float32)
TEACHER3 = RNG.normal(size=(2, 3, 3)).astype(np.float32)


def _sequence_model(softmax: bool) -> onnx.ModelProto:
    """A recognizer's layout at opset 12: x[2,3,4] -> MatMul W -> [batch, time, classes] (+ Softmax on axis 2)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z" if softmax else "y"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=2))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 3])],
                              [numpy_helper.from_array(W[:, :3].copy(), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)


@pytest.mark.parametrize("softmax", [False, True])
def test_kl_on_a_rank_3_opset_12_output_sums_the_classes_on_axis_2(softmax, tmp_path):
    session = _session(_sequence_model(softmax), LossSpec(kind="distill-kl"), tmp_path)
    assert session.artifacts.loss.class_axis == 2
    z = X3.astype(np.float64) @ W[:, :3]
    eps = 1e-7 if softmax else 0.0
    q, t = _softmax(z, axis=2), _softmax(TEACHER3.astype(np.float64), axis=2)
    expected = np.mean(np.sum(t * (np.log(t + eps) - np.log(q + eps)), axis=2))
    teacher = t.astype(np.float32) if softmax else TEACHER3
    assert session.eval_step(X3, teacher) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_cross_entropy_takes_classes_on_axis_2_and_labels_per_position(tmp_path):
    session = _session(_sequence_model(False), LossSpec(kind="cross-entropy"), tmp_path)
    labels = np.array([[0, 2, 1], [1, 1, 0]], np.int64)
    z = X3.astype(np.float64) @ W[:, :3]
    p = _softmax(z, axis=2)
    expected = -np.mean(np.log(np.take_along_axis(p, labels[..., None], axis=2)))
    assert session.eval_step(X3, labels) == pytest.approx(expected, rel=1e-5)
