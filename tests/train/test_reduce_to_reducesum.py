import numpy as np
import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand, run

from inq_onnx.train.rewrites import reduce_to_reducesum, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : %d]>
g (float[2,3,4,5] x) => (float[%s] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  e = Exp (c)
  y = %s
}
"""


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceSumSquare", "ReduceLogSum"])
@pytest.mark.parametrize("opset,call,out,extra", [
    (11, "<axes = [2, 3], keepdims = 1> (e)", "2,4,1,1", {}),
    (17, "<axes = [-1], keepdims = 0> (e)", "2,4,4", {}),
    (17, "<keepdims = 1> (e)", "1,1,1,1", {}),
    (18, "<keepdims = 1> (e, ax)", "2,1,4,1", {"ax": np.array([1, 3])}),
])
def test_reduce_becomes_a_reducesum(op, opset, call, out, extra):
    model = model_from_text(TEXT % (opset, out, f"{op} {call}"), W=rand(4, 3, 3, 3), **extra)
    before = frozen(model)
    result = reduce_to_reducesum(model)
    assert frozen(model) == before
    assert result.changed == 1 and op not in ops(result.model) and "ReduceSum" in ops(result.model)
    feeds = {"x": rand(2, 3, 4, 5, seed=2)}
    scale = float(np.abs(run(model, feeds)[0]).max())
    assert max_diff(model, result.model, feeds) <= 1e-6 * scale  # float rounding of the sums
    assert unsupported_gradient_ops(model) == [op] and unsupported_gradient_ops(result.model) == []


@pytest.mark.training
def test_rewritten_reduce_trains(tmp_path):
    model = model_from_text(TEXT % (17, "2,4,1,1", "ReduceSumSquare <axes = [2, 3], keepdims = 1> (e)"),
                            W=rand(4, 3, 3, 3))
    result = reduce_to_reducesum(model)
    assert one_train_step(result.model, ["W"], {"x": rand(2, 3, 4, 5, seed=2)}, tmp_path)["W"].any()
