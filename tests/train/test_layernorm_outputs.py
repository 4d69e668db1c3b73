import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, rand

from inq_onnx.errors import TrainingError
from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.rewrites import unsupported_gradient_ops
from inq_onnx.train.rewrites.layernorm_outputs import layernorm_outputs
from inq_onnx.train.session import TrainingSession

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,5,6] x) => (float[4,5,3] y) {
  n = LayerNormalization <axis = -1, epsilon = 0.00001> (x, S, B)
  y = MatMul (n, W)
}
"""


def _model():
    return model_from_text(TEXT, S=rand(6, seed=1) + 1, B=rand(6, seed=2), W=rand(6, 3, seed=3))


def test_layernorm_gets_mean_and_inv_std_dev_and_y_is_unchanged():
    model = _model()
    before = frozen(model)
    result = layernorm_outputs(model)
    assert frozen(model) == before
    assert result.changed == 1
    node = result.model.graph.node[0]
    assert node.output[0] == "n" and len(node.output) == 3 and all(node.output)
    assert max_diff(model, result.model, {"x": rand(4, 5, 6, seed=4)}) == 0
    assert layernorm_outputs(result.model).model is result.model  # nothing left to do


@pytest.mark.training
def test_without_the_rewrite_ort_cannot_build_the_gradient_and_with_it_it_trains(tmp_path):
    assert unsupported_gradient_ops(_model()) == ["LayerNormalization"]
    with pytest.raises(TrainingError):
        build_artifacts(_model(), trainable=["W", "S", "B"], folder=tmp_path / "before")
    model = layernorm_outputs(_model()).model
    assert unsupported_gradient_ops(model) == []
    session = TrainingSession(build_artifacts(model, trainable=["W", "S", "B"], folder=tmp_path / "after"), threads=1)
    x, target = rand(4, 5, 6, seed=5), rand(4, 5, 3, seed=6)
    losses = []
    for _ in range(3):
        session.reset_grad()
        losses.append(session.train_step(x, target))
        session.adamw_step(0.05)
    assert losses[2] < losses[0]
    assert np.any(session.gradients()["S"] != 0)
