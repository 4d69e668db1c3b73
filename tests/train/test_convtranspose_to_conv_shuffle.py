import pytest
from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.train.rewrites import convtranspose_to_conv_shuffle, unsupported_gradient_ops

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3,4,5] x) => (float[?,?,?,?] y) {
  y = ConvTranspose <kernel_shape = [%d,%d], strides = [%d,%d]%s> (x, W%s)
}
"""


def _model(kernel=(2, 2), stride=None, bias=True, extra=""):
    text = TEXT % (*kernel, *(stride or kernel), extra, ", B" if bias else "")
    params = dict(W=rand(3, 4, *kernel), B=rand(4, seed=1)) if bias else dict(W=rand(3, 4, *kernel))
    return model_from_text(text, **params)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equal_stride_becomes_conv_and_shuffle(kernel, bias):
    model = _model(kernel, bias=bias)
    before = frozen(model)
    result = convtranspose_to_conv_shuffle(model)
    assert frozen(model) == before
    assert "ConvTranspose" not in ops(result.model) and ops(result.model).count("Conv") == 1
    weights = [n.input[0] for n in result.model.graph.node if n.op_type == "Transpose"]
    assert weights[0] == "W"
    assert [t.name for t in result.model.graph.initializer][:1] == ["W"]
    assert max_diff(model, result.model, {"x": rand(2, 3, 4, 5, seed=2)}) < 1e-5
    assert unsupported_gradient_ops(model) == ["ConvTranspose"] and unsupported_gradient_ops(result.model) == []


@pytest.mark.parametrize("kwargs,reason", [
    (dict(kernel=(3, 3), stride=(2, 2)), "kernel != stride"),
    (dict(extra=", pads = [1,1,1,1]"), "pads"),
])
def test_other_convtransposes_are_left_alone(kwargs, reason):
    model = _model(**kwargs)
    result = convtranspose_to_conv_shuffle(model)
    assert result.changed == 0 and result.model is model
    assert reason in result.notes[0]


def test_grouped_convtranspose_is_left_alone():
    text = TEXT % (2, 2, 2, 2, ", group = 3", "")
    model = model_from_text(text, W=rand(3, 1, 2, 2))
    result = convtranspose_to_conv_shuffle(model)
    assert result.changed == 0 and "group" in result.notes[0]
