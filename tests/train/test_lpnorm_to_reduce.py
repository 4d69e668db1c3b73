import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand, run

from inq_onnx.train.rewrites import lpnorm_to_reduce, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : %d]>
g (float[2,3,5,4] x) => (float[2,6,5,4] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = LpNormalization %s (c)
}
"""


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("attrs", ["", "<p = 1, axis = 1>", "<p = 2, axis = 1>", "<p = 1>"])
def test_lpnorm_becomes_a_reduce_and_a_div(opset, attrs):
    model = model_from_text(TEXT % (opset, attrs), W=rand(6, 3, 3, 3))
    before = frozen(model)
    result = lpnorm_to_reduce(model)
    assert frozen(model) == before
    assert result.changed == 1 and "LpNormalization" not in ops(result.model) and ops(result.model)[-1] == "Div"
    assert max_diff(model, result.model, {"x": rand(2, 3, 5, 4, seed=2) * 3}) < 1e-6
    assert unsupported_gradient_ops(model) == ["LpNormalization"] and unsupported_gradient_ops(result.model) == []


def test_zero_vectors_stay_zero():
    model = model_from_text(TEXT % (17, "<axis = 1>"), W=np.zeros((6, 3, 3, 3), np.float32))
    result = lpnorm_to_reduce(model)
    got = run(result.model, {"x": rand(2, 3, 5, 4)})[0]
    assert np.array_equal(got, run(model, {"x": rand(2, 3, 5, 4)})[0]) and not got.any()


@pytest.mark.training
def test_rewritten_lpnorm_trains(tmp_path):
    result = lpnorm_to_reduce(model_from_text(TEXT % (17, "<axis = 1>"), W=rand(6, 3, 3, 3)))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 5, 4, seed=2)}, tmp_path)["W"].any()
