import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import mvn_to_moments, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : %d]>
g (float[2,3,5,4] x) => (float[2,6,5,4] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = MeanVarianceNormalization %s (c)
}
"""


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("attrs", ["<axes = [0, 2, 3]>", "<axes = [2, 3]>", "<axes = [1]>"])  # no axes: onnx 1.17 cannot check it
def test_mvn_becomes_its_moments(opset, attrs):
    model = model_from_text(TEXT % (opset, attrs), W=rand(6, 3, 3, 3) * 3)
    before = frozen(model)
    result = mvn_to_moments(model)
    assert frozen(model) == before
    assert result.changed == 1 and "MeanVarianceNormalization" not in ops(result.model)
    assert max_diff(model, result.model, {"x": rand(2, 3, 5, 4, seed=2) * 5}) < 5e-6
    assert unsupported_gradient_ops(model) == ["MeanVarianceNormalization"]
    assert unsupported_gradient_ops(result.model) == []


@pytest.mark.training
def test_rewritten_mvn_trains(tmp_path):
    result = mvn_to_moments(model_from_text(TEXT % (17, "<axes = [2, 3]>"), W=rand(6, 3, 3, 3)))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 5, 4, seed=2)}, tmp_path)["W"].any()
