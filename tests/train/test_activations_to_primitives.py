import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import activations_to_primitives, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3,5,5] x) => (float[2,4,5,5] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = %s
}
"""
CASES = {
    "PRelu": "PRelu (c, slope)", "Elu": "Elu <alpha = 0.7> (c)", "Elu-default": "Elu (c)", "Selu": "Selu (c)",
    "Selu-attrs": "Selu <alpha = 1.5, gamma = 1.2> (c)", "Celu": "Celu <alpha = 0.8> (c)", "Softplus": "Softplus (c)",
    "Softsign": "Softsign (c)", "Mish": "Mish (c)", "ThresholdedRelu": "ThresholdedRelu <alpha = 0.3> (c)",
}


def _model(case: str):
    return model_from_text(TEXT % CASES[case], W=rand(4, 3, 3, 3) * 4,
                           **({"slope": np.linspace(0.05, 0.3, 4, dtype=np.float32).reshape(4, 1, 1)}
                              if case == "PRelu" else {}))


@pytest.mark.parametrize("case", CASES)
def test_activation_is_spelled_with_trainable_ops_and_keeps_the_outputs(case):
    model = _model(case)
    op = case.split("-")[0]
    before = frozen(model)
    result = activations_to_primitives(model)
    assert frozen(model) == before
    assert result.changed == 1 and op not in ops(result.model)
    assert result.model.graph.node[-1].output[0] == "y"
    x = rand(2, 3, 5, 5, seed=2) * 8  # pre-activations up to about +-60
    assert max_diff(model, result.model, {"x": x}) < 2e-6 * max(1.0, float(np.abs(x).max()))
    assert unsupported_gradient_ops(model) == [op] and unsupported_gradient_ops(result.model) == []


def test_softplus_does_not_overflow_where_exp_would():
    model = _model("Softplus")
    result = activations_to_primitives(model)
    big = np.full((2, 3, 5, 5), 30.0, np.float32)  # conv outputs far above 88
    assert max_diff(model, result.model, {"x": big}) < 1e-4


def test_prelu_slope_keeps_its_name():
    result = activations_to_primitives(_model("PRelu"))
    assert "slope" in {t.name for t in result.model.graph.initializer}
    assert any("slope" in n.input for n in result.model.graph.node)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["PRelu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu"])
def test_spelled_activation_trains(case, tmp_path):
    result = activations_to_primitives(_model(case))
    trainable = ["W", "slope"] if case == "PRelu" else ["W"]
    grads = one_train_step(result.model, trainable, {"x": rand(2, 3, 5, 5, seed=2)}, tmp_path)
    assert all(grads[name].any() for name in trainable)


@pytest.mark.training
def test_elu_trains(tmp_path):
    result = activations_to_primitives(_model("Elu"))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 5, 5, seed=2)}, tmp_path)["W"].any()
