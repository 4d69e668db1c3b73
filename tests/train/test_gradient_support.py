from tests.train.train_helpers import model_from_text, rand

from inq_onnx.train.rewrites import GRADIENT_BLOCKERS, unsupported_gradient_ops

# A Resize that only shapes an integer tensor, and an If that only computes a shape, lie off
# the gradient path; the HardSigmoid after the Conv lies on it.
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,4,4] x, bool flag) => (float[1,3,4,4] y, int64[4] shape) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = HardSigmoid (c)
  s = Shape (x)
  shape = If (flag) <
    then_branch = t () => (int64[4] a) { a = Identity (s) },
    else_branch = e () => (int64[4] b) { b = Neg (s) }
  >
}
"""


def test_only_ops_between_weights_and_float_outputs_are_reported():
    model = model_from_text(TEXT, W=rand(3, 2, 3, 3))
    assert unsupported_gradient_ops(model) == ["HardSigmoid"]


def test_every_blocker_has_a_reason():
    assert {"HardSigmoid", "HardSwish", "If", "Loop", "Scan", "Resize", "ConvTranspose"} <= set(GRADIENT_BLOCKERS)
    assert all(GRADIENT_BLOCKERS.values())


def test_if_holding_float_constants_is_on_the_path():
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x, bool flag) => (float[2] y) {
  y = If (flag) <
    then_branch = t () => (float[2] a) { w = Constant <value = float[2] {1.0, 2.0}> () a = Mul (x, w) },
    else_branch = e () => (float[2] b) { b = Identity (x) }
  >
}
"""
    assert unsupported_gradient_ops(model_from_text(text)) == ["If"]


def test_layernorm_blocks_only_without_its_optional_outputs():
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x) => (float[2,4] y) {
  h = MatMul (x, W)
  y = LayerNormalization %s (h, s, b)
}
"""
    params = dict(W=rand(4, 4), s=rand(4, seed=1), b=rand(4, seed=2))
    assert unsupported_gradient_ops(model_from_text(text % "", **params)) == ["LayerNormalization"]
    complete = text.replace("y = LayerNormalization %s (h, s, b)", "y, mu, inv = LayerNormalization (h, s, b)")
    assert unsupported_gradient_ops(model_from_text(complete, **params)) == []
