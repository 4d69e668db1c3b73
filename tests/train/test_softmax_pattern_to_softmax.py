import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import softmax_pattern_to_softmax, unsupported_gradient_ops

# tf2onnx's spelling of keras softmax, axes as attributes (opset < 18) or inputs (opset 18)
ATTRS = """
<ir_version: 8, opset_import: ["" : %d]>
g (float[2,3,4] x) => (float[2,3,4] y) {
  h = MatMul (x, W)
  m = ReduceMax <axes = [%d], keepdims = 1> (h)
  d = Sub (h, m)
  e = Exp (d)
  %s
  y = Div (e, s)
}
"""
INPUTS = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3,4] x) => (float[2,3,4] y) {
  h = MatMul (x, W)
  m = ReduceMax <keepdims = 1> (h, ax)
  d = Sub (h, m)
  e = Exp (d)
  s = ReduceSum <keepdims = 1> (e, ax2)
  y = Div (e, s)
}
"""


def _attrs(opset: int, axis: int, sum_axis: int | None = None):
    """ATTRS text and its initializers: ReduceSum takes its axes as an input from opset 13."""
    sum_axis = axis if sum_axis is None else sum_axis
    inits = {"W": rand(4, 4) * 3}
    if opset < 13:
        return ATTRS % (opset, axis, f"s = ReduceSum <axes = [{sum_axis}], keepdims = 1> (e)"), inits
    inits["sax"] = np.array([sum_axis])
    return ATTRS % (opset, axis, "s = ReduceSum <keepdims = 1> (e, sax)"), inits


@pytest.mark.parametrize("opset,axis", [(11, -1), (11, 2), (13, 1), (17, -1)])
def test_written_out_softmax_becomes_one_softmax(opset, axis):
    text, inits = _attrs(opset, axis)
    model = model_from_text(text, **inits)
    before = frozen(model)
    result = softmax_pattern_to_softmax(model)
    assert frozen(model) == before
    assert result.changed == 1 and ops(result.model) == ["MatMul", "Softmax"]
    assert result.model.graph.node[1].output[0] == "y"
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, seed=2) * 4}) < 1e-6
    assert unsupported_gradient_ops(model) == ["ReduceMax"] and unsupported_gradient_ops(result.model) == []


def test_axes_as_inputs_at_opset_18_and_their_initializers_go():
    model = model_from_text(INPUTS, W=rand(4, 4) * 3, ax=np.array([1]), ax2=np.array([-2]))
    result = softmax_pattern_to_softmax(model)
    assert ops(result.model) == ["MatMul", "Softmax"]
    assert [t.name for t in result.model.graph.initializer] == ["W"]
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, seed=2) * 4}) < 1e-6


@pytest.mark.parametrize("case,edit,reason", [
    ((11, 1), None, "not the last one"),
    ((17, 1, 2), None, "not one and the same axis"),
    ((17, 2), ("y = Div (e, s)", "y0 = Div (e, s)\n  y = Add (y0, d)"), "also read elsewhere"),
])
def test_patterns_that_are_not_a_softmax_are_left_alone(case, edit, reason):
    text, inits = _attrs(*case)
    model = model_from_text(text.replace(*edit) if edit else text, **inits)
    result = softmax_pattern_to_softmax(model)
    assert result.changed == 0 and result.model is model and reason in result.notes[0]


@pytest.mark.training
def test_folded_softmax_trains(tmp_path):
    result = softmax_pattern_to_softmax(model_from_text(*_attrs(17, -1)[:1], **_attrs(17, -1)[1]))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 4, seed=2)}, tmp_path)["W"].any()
