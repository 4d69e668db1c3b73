import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests.train.train_helpers import model_from_text, rand

from inq_onnx.errors import InvalidOptionError, TrainingError
from inq_onnx.train.artifacts import build_artifacts, failure_reason
from inq_onnx.train.losses import LossSpec
from inq_onnx.train.session import TrainingSession

CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[8,1,6,6] x) => (int64[8] label, float[8,3] logits) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  r = Relu (c)
  f = Flatten (r)
  logits = Gemm <transB = 1> (f, G, B)
  label = ArgMax <axis = 1, keepdims = 0> (logits)
}
"""


def _cnn():
    return model_from_text(CNN, W=rand(2, 1, 3, 3), G=rand(3, 72, seed=1) * 0.3, B=np.zeros(3, np.float32))


def test_artifacts_train_a_tiny_cnn_in_three_steps(tmp_path, capfd):
    artifacts = build_artifacts(_cnn(), trainable=["W", "G", "B"], folder=tmp_path / "new",
                                loss=LossSpec(kind="cross-entropy"))
    assert capfd.readouterr() == ("", "")
    assert artifacts.loss.output == "logits" and artifacts.inputs == ("x", "labels")
    for path in (artifacts.training_model, artifacts.eval_model, artifacts.optimizer_model, artifacts.checkpoint):
        assert path.exists()
    session = TrainingSession(artifacts, threads=1)
    x, labels = rand(8, 1, 6, 6, seed=2), np.arange(8, dtype=np.int64) % 3
    losses = []
    for _ in range(3):
        session.reset_grad()
        losses.append(session.train_step(x, labels))
        session.adamw_step(0.05)
    assert losses[2] < losses[1] < losses[0]


def test_abort_in_the_child_becomes_a_training_error(tmp_path):
    then = helper.make_graph([helper.make_node("Relu", ["y"], ["t"])], "t", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 2, 3, 3])])
    other = helper.make_graph([helper.make_node("Sigmoid", ["y"], ["e"])], "e", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 2, 3, 3])])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"]),
         helper.make_node("If", ["c"], ["out"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 3, 3])],
        [numpy_helper.from_array(rand(2, 1, 3, 3), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(TrainingError, match=r"SIGABRT: Assertion .* ORT cannot train: If \(If: blocks training.*To fix this, for If, pin .*--pin") as error:
        build_artifacts(model, trainable=["W"], folder=tmp_path)
    assert "\n" not in str(error.value)


def test_missing_gradient_builder_is_named(tmp_path):
    model = model_from_text(CNN.replace("r = Relu (c)", "r = HardSigmoid (c)"),
                            W=rand(2, 1, 3, 3), G=rand(3, 72), B=np.zeros(3, np.float32))
    with pytest.raises(TrainingError, match="gradient builder has not been registered: HardSigmoid"):
        build_artifacts(model, trainable=["W"], folder=tmp_path)


@pytest.mark.parametrize("trainable,match", [([], "no trainable"), (["W", "nope"], "nope")])
def test_trainable_names_are_checked_before_the_child_runs(trainable, match, tmp_path):
    with pytest.raises(InvalidOptionError, match=match):
        build_artifacts(_cnn(), trainable=trainable, folder=tmp_path)


@pytest.mark.parametrize("returncode,output,expected", [
    (-6, "INFO: x\nfoo.h:1: int f(): Assertion 'n < size' failed.\n", "SIGABRT: Assertion 'n < size' failed."),
    (134, "Assertion 'n' failed.", "SIGABRT: Assertion 'n' failed."),
    (-11, "", "SIGSEGV"),
    (1, "RuntimeError: a.cc:29 b != nullptr was false. The gradient builder has not been registered: X",
     "The gradient builder has not been registered: X"),
    (1, "RuntimeError: /src/a.h:123 ArgDef O(size_t) const i < n was false. \n", "ArgDef O(size_t) const i < n was false"),
])
def test_failure_reason_is_one_line(returncode, output, expected):
    assert failure_reason(returncode, output) == expected


def test_kl_over_axis_1_of_a_rank_3_opset_12_output_raises_the_training_copy_to_13(tmp_path):
    import onnx

    model = model_from_text("""
    <ir_version: 7, opset_import: ["" : 12]>
    g (float[2,3,4] x) => (float[2,5,3] y) {
      z = MatMul (x, W)
      y = Transpose <perm = [0, 2, 1]> (z)
    }
    """, W=rand(4, 5, seed=3))
    artifacts = build_artifacts(model, trainable=["W"], folder=tmp_path, loss=LossSpec(kind="distill-kl"))
    assert artifacts.loss.class_axis == 1 and artifacts.loss.opset == 13
    assert onnx.load(str(artifacts.eval_model)).opset_import[0].version >= 13
    x, teacher = rand(2, 3, 4, seed=4), rand(2, 5, 3, seed=5)
    z = np.transpose(x.astype(np.float64) @ rand(4, 5, seed=3), (0, 2, 1))

    def log_softmax(v):
        v = v - v.max(axis=1, keepdims=True)
        return v - np.log(np.exp(v).sum(axis=1, keepdims=True))

    expected = np.mean(np.sum(np.exp(log_softmax(teacher)) * (log_softmax(teacher) - log_softmax(z)), axis=1))
    got = TrainingSession(artifacts, threads=1).eval_step(x, teacher)
    assert got == pytest.approx(expected, rel=1e-5)
