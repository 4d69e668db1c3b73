import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.train.rewrites import resize_to_repeat, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[%s] x) => (float[%s] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = Resize <mode = "%s", coordinate_transformation_mode = "%s", nearest_mode = "%s"> (c, roi, scales)
}
"""


def _model(scales, mode="nearest", coords="asymmetric", rounding="floor", shape="1,2,4,5", out="?,?,?,?"):
    return model_from_text(TEXT % (shape, out, mode, coords, rounding), W=rand(3, 2, 3, 3),
                           roi=np.zeros(0, np.float32), scales=np.asarray(scales, np.float32))


@pytest.mark.parametrize("coords,rounding", [
    ("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"), ("pytorch_half_pixel", "round_prefer_ceil"),
])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 3, 2], [1, 2, 1, 4]])
def test_integer_nearest_resize_becomes_an_exact_repeat(scales, coords, rounding):
    model = _model(scales, coords=coords, rounding=rounding)
    before = frozen(model)
    result = resize_to_repeat(model)
    assert frozen(model) == before
    assert ops(result.model) == ["Conv", "Reshape", "Mul", "Reshape"]
    assert {"roi", "scales"}.isdisjoint(t.name for t in result.model.graph.initializer)
    assert max_diff(model, result.model, {"x": rand(1, 2, 4, 5)}) == 0
    assert unsupported_gradient_ops(model) == ["Resize"] and unsupported_gradient_ops(result.model) == []


def test_sizes_input_is_accepted():
    text = TEXT.replace("(c, roi, scales)", '(c, roi, , sizes)')
    model = model_from_text(text % ("1,2,4,5", "?,?,?,?", "nearest", "asymmetric", "floor"),
                            W=rand(3, 2, 3, 3), roi=np.zeros(0, np.float32), sizes=np.array([1, 3, 8, 15]))
    result = resize_to_repeat(model)
    assert result.changed == 1
    assert max_diff(model, result.model, {"x": rand(1, 2, 4, 5)}) == 0


@pytest.mark.parametrize("kwargs,reason", [
    (dict(scales=[1, 1, 2, 2], mode="linear"), "not an exact repeat"),
    (dict(scales=[1, 1, 3, 3], coords="asymmetric", rounding="round_prefer_floor"), "not an exact repeat"),
    (dict(scales=[1, 1, 1.5, 2]), "not constant integers"),
    (dict(scales=[1, 1, 2, 2], shape="N,2,4,5"), "not static"),
])
def test_other_resizes_are_left_alone_with_a_reason(kwargs, reason):
    model = _model(**kwargs)
    result = resize_to_repeat(model)
    assert result.changed == 0 and result.model is model
    assert reason in result.notes[0]
