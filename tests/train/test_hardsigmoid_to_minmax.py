import numpy as np
from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.train.rewrites import hardsigmoid_to_minmax, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 14]>
g (float[2,3,6,6] x) => (float[2,5] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  r = Relu (c)
  h = HardSigmoid <alpha = 0.3, beta = 0.4> (r)
  d = HardSigmoid (c)
  s = HardSwish (c)
  a = Add (h, d)
  b = Add (a, s)
  f = Flatten (b)
  y = Gemm <transB = 1> (f, G)
}
"""


def _model():
    return model_from_text(TEXT, W=rand(4, 3, 3, 3, seed=1) * 3, G=rand(5, 144, seed=2))


def test_rewrite_is_exact_and_removes_the_ops_without_gradient():
    model = _model()
    before = frozen(model)
    result = hardsigmoid_to_minmax(model)
    assert frozen(model) == before
    assert result.changed == 3
    assert "HardSigmoid" not in ops(result.model) and "HardSwish" not in ops(result.model)
    assert ops(result.model).count("Min") == 3 and ops(result.model).count("Max") == 3
    assert max_diff(model, result.model, {"x": rand(2, 3, 6, 6) * 4}) < 1e-6
    assert unsupported_gradient_ops(model) == ["HardSigmoid", "HardSwish"]
    assert unsupported_gradient_ops(result.model) == []


def test_attributes_and_defaults_become_scalar_initializers():
    result = hardsigmoid_to_minmax(_model())
    values = sorted(float(np.frombuffer(t.raw_data, np.float32)[0]) for t in result.model.graph.initializer if not t.dims)
    assert np.allclose(values, sorted({0.0, 1.0, 0.3, 0.4, 0.2, 0.5, 1 / 6}))


def test_model_without_hardsigmoid_is_returned_as_is():
    model = model_from_text(TEXT.replace("HardSigmoid <alpha = 0.3, beta = 0.4>", "Relu")
                            .replace("HardSigmoid", "Relu").replace("HardSwish", "Relu"),
                            W=rand(4, 3, 3, 3), G=rand(5, 144))
    assert hardsigmoid_to_minmax(model).model is model
