import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, one_train_step, ops, rand

from inq_onnx.train.rewrites import globalmaxpool_to_maxpool, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[%s] x) => (float[2,5] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  p = GlobalMaxPool (c)
  f = Flatten (p)
  y = Gemm <transB = 1> (f, G)
}
"""


def _model(shape="2,3,5,7"):
    return model_from_text(TEXT % shape, W=rand(4, 3, 3, 3), G=rand(5, 4, seed=1))


def test_globalmaxpool_becomes_a_maxpool_over_the_whole_plane():
    model = _model()
    before = frozen(model)
    result = globalmaxpool_to_maxpool(model)
    assert frozen(model) == before
    assert result.changed == 1 and ops(result.model) == ["Conv", "MaxPool", "Flatten", "Gemm"]
    pool = result.model.graph.node[1]
    assert list(pool.attribute[0].ints) == [5, 7] and pool.output[0] == "p"
    assert max_diff(model, result.model, {"x": rand(2, 3, 5, 7, seed=3)}) == 0
    assert unsupported_gradient_ops(model) == ["GlobalMaxPool"] and unsupported_gradient_ops(result.model) == []


def test_one_dimensional_input_too():
    text = TEXT.replace("<pads = [1,1,1,1]>", "<pads = [1,1]>").replace("f = Flatten (p)", "f = Flatten (p)")
    model = model_from_text(text % "2,3,9", W=rand(4, 3, 3), G=rand(5, 4, seed=1))
    result = globalmaxpool_to_maxpool(model)
    assert list(result.model.graph.node[1].attribute[0].ints) == [9]
    assert max_diff(model, result.model, {"x": rand(2, 3, 9, seed=3)}) == 0


def test_symbolic_spatial_size_is_left_alone_with_a_reason():
    model = _model("2,3,H,W")
    result = globalmaxpool_to_maxpool(model)
    assert result.model is model and "not static" in result.notes[0]


@pytest.mark.training
def test_rewritten_graph_trains(tmp_path):
    result = globalmaxpool_to_maxpool(_model())
    grads = one_train_step(result.model, ["W", "G"], {"x": rand(2, 3, 5, 7, seed=3)}, tmp_path)
    assert grads["W"].any() and grads["G"].any()


@pytest.mark.training
@pytest.mark.parametrize("op", ["GlobalAveragePool"])
def test_globalaveragepool_trains_as_it_is(op, tmp_path):
    model = model_from_text((TEXT % "2,3,5,7").replace("GlobalMaxPool", op), W=rand(4, 3, 3, 3), G=rand(5, 4, seed=1))
    assert unsupported_gradient_ops(model) == []
    assert one_train_step(model, ["W"], {"x": rand(2, 3, 5, 7, seed=3)}, tmp_path)["W"].any()
