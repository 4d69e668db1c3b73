import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand, run

from inq_onnx.train.rewrites import lrn_to_avgpool, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[%s] x) => (float[2,6,5,4] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = LRN %s (c)
}
"""


def _model(attrs, shape="2,3,5,4"):
    return model_from_text(TEXT % (shape, attrs), W=rand(6, 3, 3, 3) * 3)


@pytest.mark.parametrize("attrs", [
    "<size = 3>", "<size = 5, alpha = 0.001, beta = 0.75, bias = 2.0>", "<size = 7, alpha = 0.5, beta = 0.5>",
    "<size = 1>",
])
def test_lrn_becomes_an_average_pool_over_channels(attrs):
    model = _model(attrs)
    before = frozen(model)
    result = lrn_to_avgpool(model)
    assert frozen(model) == before
    assert result.changed == 1 and "LRN" not in ops(result.model) and "AveragePool" in ops(result.model)
    feeds = {"x": rand(2, 3, 5, 4, seed=2) * 3}
    scale = float(np.abs(run(model, feeds)[0]).max())
    assert max_diff(model, result.model, feeds) <= 1e-6 * scale
    assert unsupported_gradient_ops(model) == ["LRN"] and unsupported_gradient_ops(result.model) == []


def test_symbolic_shape_is_left_alone():
    result = lrn_to_avgpool(_model("<size = 3>", "N,3,5,4"))
    assert result.changed == 0 and "not static" in result.notes[0]


@pytest.mark.training
def test_rewritten_lrn_trains(tmp_path):
    result = lrn_to_avgpool(_model("<size = 3, alpha = 0.5>"))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 5, 4, seed=2)}, tmp_path)["W"].any()
