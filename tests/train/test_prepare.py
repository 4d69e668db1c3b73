import numpy as np
import pytest
from tests.train.train_helpers import frozen, model_from_text, ops, rand, run

from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.rewrites import prepare_for_training, sample_feeds, unsupported_gradient_ops

# Every blocker at once, Paddle style: Constant weights, opset 11, HardSigmoid, BN, a nearest
# Resize, a kernel==stride ConvTranspose, an If on a pinned input, symbolic and -1 dims.
TEXT = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N,3,?,?] x, int64 mode) => (float[N,2,?,?] y) {
  W = Constant <value = float[4,3,3,3] {%s}> ()
  T = Constant <value = float[4,2,2,2] {%s}> ()
  c = Conv <pads = [1,1,1,1]> (x, W)
  b = BatchNormalization (c, s, bias, m, v)
  h = HardSigmoid (b)
  lo = Constant <value = float {0.1}> ()
  hi = Constant <value = float {0.9}> ()
  k = Clip (h, lo, hi)
  r = Resize <mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"> (k, roi, scales)
  u = ConvTranspose <kernel_shape = [2,2], strides = [2,2]> (r, T)
  two = Constant <value = int64 {2}> ()
  same = Equal (mode, two)
  y = If (same) <
    then_branch = t () => (float[N,2,?,?] a) { a = Relu (u) },
    else_branch = e () => (float[N,2,?,?] z) { z = Sigmoid (u) }
  >
}
""" % (", ".join(map(str, rand(4, 3, 3, 3).ravel())), ", ".join(map(str, rand(4, 2, 2, 2, seed=1).ravel())))


MISSING = {"lower_ir_version", "globalmaxpool_to_maxpool", "softmax_pattern_to_softmax", "reduce_to_maxpool", "activations_to_primitives",
           "depth_to_space_to_transpose", "instancenorm_to_moments", "reduce_to_reducesum",
           "lrn_to_avgpool", "lpnorm_to_reduce", "groupnorm_to_moments",
           "mvn_to_moments", "layernorm_outputs"}  # tested apart


def _model():
    model = model_from_text(TEXT, s=np.linspace(0.5, 2, 4, dtype=np.float32), bias=rand(4, seed=2),
                            m=rand(4, seed=3), v=np.linspace(0.2, 1, 4, dtype=np.float32),
                            roi=np.zeros(0, np.float32), scales=np.array([1, 1, 2, 2], np.float32))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    return model


def test_prepare_removes_every_blocker_and_keeps_the_forward():
    model = _model()
    before = frozen(model)
    assert unsupported_gradient_ops(model) == ["HardSigmoid", "Resize", "ConvTranspose", "If"]
    prepared, steps = prepare_for_training(model, input_shapes={"x": (2, 3, 4, 6)}, pins={"mode": np.array(2)})
    assert frozen(model) == before
    assert [name for name, _ in steps] == [
        "lower_ir_version", "fold_if", "pin_input_shapes", "constants_to_initializers", "hardsigmoid_to_minmax",
        "clip_opset_bump", "batchnorm_to_affine", "resize_to_repeat", "convtranspose_to_conv_shuffle",
        "globalmaxpool_to_maxpool", "softmax_pattern_to_softmax", "reduce_to_maxpool", "activations_to_primitives",
        "depth_to_space_to_transpose", "instancenorm_to_moments", "reduce_to_reducesum",
        "lrn_to_avgpool", "lpnorm_to_reduce", "groupnorm_to_moments",
        "mvn_to_moments", "layernorm_outputs",
    ]
    assert all(result.changed for name, result in steps if name not in MISSING)
    assert unsupported_gradient_ops(prepared) == []
    assert not {"If", "HardSigmoid", "BatchNormalization", "Resize", "ConvTranspose", "Constant"} & set(ops(prepared))
    x = rand(2, 3, 4, 6, seed=4) * 3
    want = run(model, {"x": x, "mode": np.array(2)})[0]
    np.testing.assert_allclose(run(prepared, {"x": x})[0], want, atol=1e-6)


def test_every_free_input_needs_a_shape_and_every_shape_an_input():
    with pytest.raises(InvalidOptionError, match="input 'x' has no static shape"):
        prepare_for_training(_model(), input_shapes={}, pins={"mode": np.array(2)})
    with pytest.raises(InvalidOptionError, match="not graph inputs"):
        prepare_for_training(_model(), input_shapes={"x": (1, 3, 4, 4), "images": (1,)}, pins={"mode": np.array(2)})


def test_sample_feeds_follow_the_declared_types():
    feeds = sample_feeds(_model(), {"x": (1, 3, 2, 2), "mode": ()}, seed=0)
    assert feeds["x"].dtype == np.float32 and feeds["mode"].dtype == np.int64 and feeds["mode"].shape == ()
