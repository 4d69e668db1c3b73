from tests.train.train_helpers import max_diff, model_from_text, rand

from inq_onnx.train.rewrites import clip_opset_bump
from inq_onnx.graph.tensors import default_opset

CLIP = """
<ir_version: 7, opset_import: ["" : %d]>
g (float[2,4] x) => (float[2,4] y) {
  lo = Constant <value = float {-0.5}> ()
  hi = Constant <value = float {0.5}> ()
  y = Clip (x, lo, hi)
}
"""

OLD_CLIP = """
<ir_version: 7, opset_import: ["" : 9]>
g (float[2,4] x) => (float[2,4] y) {
  y = Clip <min = -0.5, max = 0.5> (x)
}
"""


def test_opset_11_is_raised_to_12_without_changing_the_output():
    model = model_from_text(CLIP % 11)
    result = clip_opset_bump(model)
    assert default_opset(model) == 11 and default_opset(result.model) == 12
    assert result.changed == 1
    assert max_diff(model, result.model, {"x": rand(2, 4)}) == 0


def test_older_opsets_go_through_the_version_converter():
    model = model_from_text(OLD_CLIP)
    result = clip_opset_bump(model)
    assert default_opset(result.model) == 12
    assert max_diff(model, result.model, {"x": rand(2, 4)}) == 0


def test_opset_12_and_newer_are_unchanged():
    model = model_from_text(CLIP % 13)
    assert clip_opset_bump(model).model is model
