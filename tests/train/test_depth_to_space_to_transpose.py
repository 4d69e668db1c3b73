import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import depth_to_space_to_transpose, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[%s] x) => (float[%s] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = %s (c)
}
"""
CASES = {
    "DCR": ("2,3,4,6", "2,2,8,12", 'DepthToSpace <blocksize = 2, mode = "DCR">'),
    "CRD": ("2,3,4,6", "2,2,8,12", 'DepthToSpace <blocksize = 2, mode = "CRD">'),
    "default": ("2,3,4,6", "2,2,8,12", "DepthToSpace <blocksize = 2>"),
    "SpaceToDepth": ("2,3,4,6", "2,32,2,3", "SpaceToDepth <blocksize = 2>"),
}


def _model(case, shape=None):
    x, y, op = CASES[case]
    return model_from_text(TEXT % (shape or x, y, op), W=rand(8, 3, 3, 3))


@pytest.mark.parametrize("case", CASES)
def test_pixel_shuffles_become_an_exact_reshape_transpose(case):
    model = _model(case)
    before = frozen(model)
    result = depth_to_space_to_transpose(model)
    assert frozen(model) == before
    assert result.changed == 1 and ops(result.model) == ["Conv", "Reshape", "Transpose", "Reshape"]
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, 6, seed=2)}) == 0
    assert unsupported_gradient_ops(model) and unsupported_gradient_ops(result.model) == []


def test_symbolic_shape_is_left_alone():
    result = depth_to_space_to_transpose(_model("DCR", "N,3,4,6"))
    assert result.changed == 0 and "not static" in result.notes[0]


@pytest.mark.training
def test_rewritten_shuffle_trains(tmp_path):
    result = depth_to_space_to_transpose(_model("CRD"))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 4, 6, seed=2)}, tmp_path)["W"].any()
