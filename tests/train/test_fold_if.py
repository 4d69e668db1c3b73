import numpy as np
import pytest
from tests.train.train_helpers import frozen, model_from_text, ops, rand, run

from inq_onnx.errors import InvalidOptionError, UnsupportedModelError
from inq_onnx.train.rewrites import fold_if, unsupported_gradient_ops

# Top If on a pinned rate; its then-branch holds a second If on the batch size that reads
# the outer weight W, a branch value (h) and defines names that collide with the other If.
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,5,5] x, int64 sr) => (float[N,3,3,3] y, float[N,3,3,3] p) {
  k = Constant <value = int64 {16000}> ()
  is16 = Equal (sr, k)
  c = Conv (x, W)
  y = If (is16) <
    then_branch = t () => (float[N,3,3,3] ty) {
      h = Relu (c)
      s = Shape (x)
      i0 = Constant <value = int64 {0}> ()
      n = Gather (s, i0)
      one = Constant <value = int64 {1}> ()
      single = Equal (n, one)
      ty = If (single) <
        then_branch = t2 () => (float[N,3,3,3] z) { z = Sigmoid (h) },
        else_branch = e2 () => (float[N,3,3,3] z2) { w = Constant <value = float {2.0}> () z2 = Mul (h, w) }
      >
    },
    else_branch = e () => (float[N,3,3,3] ey) { ey = Neg (c) }
  >
  p = If (is16) <
    then_branch = t3 () => (float[N,3,3,3] h) { w = Constant <value = float {3.0}> () h = Mul (c, w) },
    else_branch = e3 () => (float[N,3,3,3] c2) { c2 = Identity (c) }
  >
}
"""


def _model():
    return model_from_text(TEXT, W=rand(3, 2, 3, 3))


def _feeds(batch, sr=16000):
    return {"x": rand(batch, 2, 5, 5, seed=batch), "sr": np.array(sr, np.int64)}


@pytest.mark.parametrize("sr", [16000, 8000])
def test_pinned_condition_folds_every_if_and_keeps_outputs(sr):
    model = _model()
    before = frozen(model)
    feeds = [_feeds(3, sr), _feeds(4, sr)]
    result = fold_if(model, {"sr": np.array(sr)}, feeds)
    assert frozen(model) == before
    assert "If" not in ops(result.model)
    assert [v.name for v in result.model.graph.input] == ["x"]
    assert [v.name for v in result.model.graph.output] == ["y", "p"]
    for batch in (3, 4):
        for got, want in zip(run(result.model, _feeds(batch, sr)), run(model, _feeds(batch, sr))):
            np.testing.assert_array_equal(got, want)
    assert unsupported_gradient_ops(model) == ["If"] and unsupported_gradient_ops(result.model) == []


def test_colliding_branch_names_are_renamed():
    result = fold_if(_model(), {"sr": np.array(16000)}, [_feeds(3)])
    outputs = [o for n in result.model.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    assert result.notes == ("inputs ['sr'] pinned as constants", "3 If nodes folded in 2 rounds")


def test_condition_that_depends_on_the_data_is_refused():
    with pytest.raises(UnsupportedModelError, match="different branches"):
        fold_if(_model(), {"sr": np.array(16000)}, [_feeds(1), _feeds(3)])


def test_missing_feed_and_unknown_pin_raise():
    with pytest.raises(InvalidOptionError, match="lack inputs"):
        fold_if(_model(), {"sr": np.array(16000)}, [{}])
    with pytest.raises(InvalidOptionError, match="not graph inputs"):
        fold_if(_model(), {"rate": np.array(16000)}, [_feeds(3)])


def test_model_without_if_or_pin_is_unchanged():
    model = model_from_text("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) { y = Relu (x) }
""")
    assert fold_if(model, {}, {"x": rand(2)}).model is model
