import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import reduce_to_maxpool, unsupported_gradient_ops
from inq_onnx.train.rewrites.reduce_to_maxpool import pool_plan

ATTRS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4,5] x) => (float[%s] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = %s <axes = %s, keepdims = %d> (c)
}
"""
INPUTS = """
<ir_version: 8, opset_import: ["" : 18]>
g (float[2,3,4,5] x) => (float[%s] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = %s <keepdims = %d> (c, ax)
}
"""


def test_plan_moves_the_reduced_axes_last():
    assert pool_plan((2, 3, 4, 5), (2, 3), True) == (None, [1, 1, 6, 20], [2, 3, 1, 1])
    assert pool_plan((2, 3, 4, 5), (1,), False) == ([0, 2, 3, 1], [1, 1, 40, 3], [2, 4, 5])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes,keepdims,out", [
    ("[2, 3]", 1, "2,4,1,1"), ("[-1]", 0, "2,4,4"), ("[1]", 1, "2,1,4,5"), ("[0, 2]", 0, "4,5"),
])
def test_reduce_over_static_axes_becomes_an_exact_maxpool(op, axes, keepdims, out):
    model = model_from_text(ATTRS % (out, op, axes, keepdims), W=rand(4, 3, 3, 3))
    before = frozen(model)
    result = reduce_to_maxpool(model)
    assert frozen(model) == before
    assert result.changed == 1 and "MaxPool" in ops(result.model) and op not in ops(result.model)
    assert ("Neg" in ops(result.model)) == (op == "ReduceMin")
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, 5, seed=2)}) == 0
    assert unsupported_gradient_ops(model) == [op] and unsupported_gradient_ops(result.model) == []


def test_axes_as_an_input_at_opset_18():
    model = model_from_text(INPUTS % ("2,4,4,1", "ReduceMax", 1), W=rand(4, 3, 3, 3), ax=np.array([3]))
    result = reduce_to_maxpool(model)
    assert result.changed == 1 and "ax" not in {t.name for t in result.model.graph.initializer}
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, 5, seed=2)}) == 0


def test_symbolic_shape_or_integer_input_is_left_alone():
    text = ATTRS.replace("float[2,3,4,5] x", "float[N,3,4,5] x") % ("N,4,1,1", "ReduceMax", "[2, 3]", 1)
    result = reduce_to_maxpool(model_from_text(text, W=rand(4, 3, 3, 3)))
    assert result.changed == 0 and "not static" in result.notes[0]
    ints = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[3,4] x) => (int64[3] y) { y = ReduceMax <axes = [1], keepdims = 0> (x) }
"""
    result = reduce_to_maxpool(model_from_text(ints))
    assert result.changed == 0 and "not a float" in result.notes[0]


@pytest.mark.training
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_rewritten_reduce_trains(op, tmp_path):
    result = reduce_to_maxpool(model_from_text(ATTRS % ("2,4,1,1", op, "[2, 3]", 1), W=rand(4, 3, 3, 3)))
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 4, 5, seed=2)}, tmp_path)["W"].any()
