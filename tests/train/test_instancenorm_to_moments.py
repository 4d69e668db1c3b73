import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import instancenorm_to_moments, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : %d]>
g (float[2,3,%s] x) => (float[2,4,%s] y) {
  c = Conv <pads = [%s]> (x, W)
  y = InstanceNormalization <epsilon = 0.001> (c, s, b)
}
"""


def _model(opset=17, spatial="5,6"):
    rank = spatial.count(",") + 1
    kernel = (3,) * rank
    return model_from_text(TEXT % (opset, spatial, spatial, ",".join(["1"] * 2 * rank)), W=rand(4, 3, *kernel) * 3,
                           s=np.linspace(0.5, 2, 4, dtype=np.float32), b=rand(4, seed=1))


@pytest.mark.parametrize("opset,spatial", [(17, "5,6"), (18, "5,6"), (17, "7"), (18, "3,4,5")])
def test_instancenorm_becomes_its_moments(opset, spatial):
    model = _model(opset, spatial)
    before = frozen(model)
    result = instancenorm_to_moments(model)
    assert frozen(model) == before
    assert result.changed == 1 and "InstanceNormalization" not in ops(result.model)
    assert {"s", "b"} <= {i for n in result.model.graph.node for i in n.input}
    x = rand(2, 3, *map(int, spatial.split(",")), seed=2) * 5
    assert max_diff(model, result.model, {"x": x}) < 5e-6
    assert unsupported_gradient_ops(model) == ["InstanceNormalization"]
    assert unsupported_gradient_ops(result.model) == []


@pytest.mark.training
def test_rewritten_instancenorm_trains(tmp_path):
    result = instancenorm_to_moments(_model())
    grads = one_train_step(result.model, ["W", "s", "b"], {"x": rand(2, 3, 5, 6, seed=2)}, tmp_path)
    assert grads["W"].any() and grads["s"].any() and grads["b"].any()
