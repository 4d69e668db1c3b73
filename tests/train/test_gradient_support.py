from tests.train.train_helpers import model_from_text, rand

from inq_onnx.train.rewrites import (
    GRADIENT_BLOCKERS, GradientStatus, gradient_report, prepare_for_training, unsupported_gradient_ops,
)
from inq_onnx.train.rewrites.gradient_support import training_report

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


REPORT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[%s] x) => (float[2,5] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  h = HardSigmoid (c)
  p = GlobalMaxPool (h)
  q = ReduceProd <axes = [2, 3], keepdims = 1> (p)
  f = Flatten (q)
  y = Gemm <transB = 1> (f, G)
}
"""


def _statuses(report):
    return {entry.op: (entry.status.value, entry.rewrite) for entry in report}


def test_report_without_training_shapes_names_each_rewrite_with_its_condition():
    model = model_from_text(REPORT % "N,3,5,5", W=rand(4, 3, 3, 3), G=rand(5, 4))
    report = gradient_report(model)
    assert _statuses(report) == {
        "Conv": ("trains", ""), "HardSigmoid": ("trains through a rewrite", "hardsigmoid_to_minmax"),
        "GlobalMaxPool": ("trains through a rewrite", "globalmaxpool_to_maxpool, with a static spatial size"),
        "ReduceProd": ("blocks training", ""), "Flatten": ("trains", ""), "Gemm": ("trains", ""),
    }
    prod = next(e for e in report if e.op == "ReduceProd")
    assert "one shot without --data" in prod.way_out and "inq-onnx step" in prod.way_out
    assert "ReduceProd: blocks training (no gradient builder); quantize one shot" in prod.describe()


def test_report_after_prepare_says_which_rewrites_applied():
    model = model_from_text(REPORT % "N,3,5,5", W=rand(4, 3, 3, 3), G=rand(5, 4))
    prepared, _ = prepare_for_training(model, input_shapes={"x": (2, 3, 5, 5)})
    statuses = _statuses(gradient_report(model, prepared))
    assert statuses["GlobalMaxPool"] == ("trains through a rewrite", "globalmaxpool_to_maxpool")
    assert statuses["ReduceProd"][0] == "blocks training"
    assert training_report(model_from_text(REPORT % "2,3,5,5", W=rand(4, 3, 3, 3), G=rand(5, 4))) == \
        gradient_report(model, prepared)


def test_an_if_that_stays_gets_the_pin_advice():
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x, bool flag) => (float[2] y) {
  y = If (flag) <
    then_branch = t () => (float[2] a) { w = Constant <value = float[2] {1.0, 2.0}> () a = Mul (x, w) },
    else_branch = e () => (float[2] b) { b = Identity (x) }
  >
}
"""
    model = model_from_text(text)
    [entry] = gradient_report(model, model)
    assert entry.status is GradientStatus.BLOCKS and "--pin INPUT=VALUE" in entry.way_out
    assert entry.to_json()["status"] == "blocks training"
