import numpy as np
from onnx import numpy_helper
from tests.train.train_helpers import frozen, max_diff, model_from_text, ops, rand

from inq_onnx.train.rewrites import affine_from_batchnorm, batchnorm_from_affine, batchnorm_to_affine

TEXT = """
<ir_version: 8, opset_import: ["" : 15]>
g (float[2,3,5,5] x, float[2,4,5] z) => (float[2,4,5,5] y, float[2,4,5] w) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  y = BatchNormalization <epsilon = 0.001> (c, s, b, m, v)
  w = BatchNormalization (z, s, b, m, v)
}
"""


def _params():
    rng = np.random.default_rng(0)
    return dict(W=rand(4, 3, 3, 3), s=rng.uniform(0.5, 2, 4).astype(np.float32), b=rand(4, seed=1),
                m=rand(4, seed=2), v=rng.uniform(0.1, 3, 4).astype(np.float32))


def test_bn_becomes_mul_add_with_named_k_and_c():
    model = model_from_text(TEXT, **_params())
    before = frozen(model)
    result = batchnorm_to_affine(model)
    assert frozen(model) == before
    assert ops(result.model) == ["Conv", "Mul", "Add", "Mul", "Add"]
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert set(inits) == {"W", "s__inq_bn_k", "b__inq_bn_c", "s__inq_bn_k_1", "b__inq_bn_c_1"}
    assert inits["s__inq_bn_k"].shape == (4, 1, 1) and inits["s__inq_bn_k_1"].shape == (4, 1)
    assert "k 's__inq_bn_k', c 'b__inq_bn_c' from scale 's', B 'b', mean 'm', var 'v'" in result.notes[0]
    feeds = {"x": rand(2, 3, 5, 5, seed=3), "z": rand(2, 4, 5, seed=4)}
    assert max_diff(model, result.model, feeds) < 1e-5


def test_affine_math_matches_the_bn_formula_and_maps_back():
    p = _params()
    x = rand(6, 4, seed=5)
    k, c = affine_from_batchnorm(p["s"], p["b"], p["m"], p["v"], 1e-3)
    reference = (x - p["m"]) / np.sqrt(p["v"] + 1e-3) * p["s"] + p["b"]
    np.testing.assert_allclose(x * k + c, reference, rtol=1e-6, atol=1e-6)
    scale, bias = batchnorm_from_affine(k.reshape(4, 1, 1), c, p["m"], p["v"], 1e-3)
    np.testing.assert_allclose(scale, p["s"], rtol=1e-12)
    np.testing.assert_allclose(bias, p["b"], rtol=1e-12, atol=1e-12)


def test_bn_with_non_constant_statistics_is_left_alone():
    text = TEXT.replace("float[2,4,5] z)", "float[2,4,5] z, float[4] m)")
    params = _params()
    del params["m"]
    model = model_from_text(text, **params)
    result = batchnorm_to_affine(model)
    assert result.changed == 0 and result.model is model
    assert all("not constants" in note for note in result.notes)
