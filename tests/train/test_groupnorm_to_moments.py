import numpy as np
import onnx
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import groupnorm_to_moments, unsupported_gradient_ops

TEXT = """
<ir_version: %d, opset_import: ["" : %d]>
g (float[%s] x) => (float[2,6,5,4] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = GroupNormalization <num_groups = %d, epsilon = 0.001> (c, s, b)
}
"""


# onnx 1.18+ deprecates the opset-18 GroupNormalization (its checker refuses it); 1.17 does not.
OPSET_18_DEPRECATED = onnx.defs.get_schema("GroupNormalization", 18).deprecated


def _model(opset=18, groups=3, shape="2,3,5,4"):
    size = groups if opset < 21 else 6
    return model_from_text(TEXT % (8 if opset < 21 else 10, opset, shape, groups), W=rand(6, 3, 3, 3) * 3,
                           s=np.linspace(0.5, 2, size, dtype=np.float32), b=rand(size, seed=1))


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_groupnorm_becomes_its_moments(opset, groups):
    if opset == 18 and OPSET_18_DEPRECATED:
        pytest.skip(f"onnx {onnx.__version__} deprecates GroupNormalization-18")
    model = _model(opset, groups)
    before = frozen(model)
    result = groupnorm_to_moments(model)
    assert frozen(model) == before
    assert result.changed == 1 and "GroupNormalization" not in ops(result.model)
    assert max_diff(model, result.model, {"x": rand(2, 3, 5, 4, seed=2) * 5}) < 5e-6
    assert unsupported_gradient_ops(model) == ["GroupNormalization"]
    assert unsupported_gradient_ops(result.model) == []


def test_symbolic_shape_is_left_alone():
    result = groupnorm_to_moments(_model(21, 6, shape="N,3,5,4"))
    assert result.changed == 0 and "static shape" in result.notes[0]


@pytest.mark.training
def test_rewritten_groupnorm_trains(tmp_path):
    result = groupnorm_to_moments(_model())
    grads = one_train_step(result.model, ["W", "s", "b"], {"x": rand(2, 3, 5, 4, seed=2)}, tmp_path)
    assert grads["W"].any() and grads["s"].any() and grads["b"].any()
