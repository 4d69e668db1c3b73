"""Bias correction on models: which layers, which biases, and the output means it restores."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inq_onnx.calibration import calibrate, correct_step
from inq_onnx.data import Samples
from inq_onnx.graph.bias_layers import find_layers
from inq_onnx.graph.tensors import TensorSite
from inq_onnx.graph.weights import select_weights
from inq_onnx.incremental import InqOptions, partition_step, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantize_model
from inq_onnx.runtime import session
from tests.conftest import conv_gemm_model, make_model, tensor

F = TensorProto.FLOAT


def samples(n=40, seed=0, shape=(2, 5, 5)) -> Samples:
    return Samples({"x": np.random.default_rng(seed).random((n, *shape)).astype(np.float32)}, None, "test")


def run(model, s: Samples, names=None) -> list[np.ndarray]:
    return session(model).run(names, s.take(slice(None)))


def site(name: str) -> TensorSite:
    return TensorSite(name, (), "initializer")


def test_a_gemm_output_mean_is_restored_exactly():
    model, s = conv_gemm_model(), samples()
    options = QuantizeOptions(bits=3, exclude=("conv.w",), bias_correction="on")  # the Gemm input is unchanged
    corrected = quantize_model(model, options, samples=s)
    plain = quantize_model(model, QuantizeOptions(bits=3, exclude=("conv.w",), bias_correction="off"))
    ref, q, q0 = run(model, s)[0], run(corrected.model, s)[0], run(plain.model, s)[0]
    assert np.abs(q0.mean(0) - ref.mean(0)).max() > 1e-2  # rounding shifted the means
    np.testing.assert_allclose(q.mean(0), ref.mean(0), atol=1e-5)  # every calibration sample used (40 < 256)
    assert corrected.bias_correction.corrected == ("fc.w",) and corrected.bias_correction.samples == 40
    assert plain.bias_correction is None


def no_bias_conv_model() -> onnx.ModelProto:
    """x[N,2,5,5] -> Conv(W, no bias, 'valid') -> y[N,3,3,3], and a MatMul without an Add."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"]),
             helper.make_node("Flatten", ["y"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["z"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 2, 5, 5])],
                      [helper.make_tensor_value_info("y", F, ["N", 3, 3, 3]), helper.make_tensor_value_info("z", F, ["N", 4])],
                      [tensor("w", rng.normal(size=(3, 2, 3, 3)).astype(np.float32)),
                       tensor("m", rng.normal(size=(27, 4)).astype(np.float32))])


def test_a_conv_without_bias_gets_one_and_a_bare_matmul_is_left_alone_with_a_reason():
    model = no_bias_conv_model()
    s = Samples({"x": np.broadcast_to(np.random.default_rng(1).random((30, 2, 1, 1)), (30, 2, 5, 5))
                 .astype(np.float32)}, None, "constant over space: the conv correction is exact")
    result = quantize_model(model, QuantizeOptions(bits=3, bias_correction="on"), samples=s)
    report = result.bias_correction
    assert report.created == ("w",) and report.skipped == {"m": "its MatMul output is not read by exactly one Add "
                                                                 "(no bias to correct)"}
    conv = result.model.graph.node[0]
    assert len(conv.input) == 3 and conv.input[2] == "w.inq_bias"
    ref, q = run(model, s)[0], run(result.model, s)[0]
    np.testing.assert_allclose(q.mean(axis=(0, 2, 3)), ref.mean(axis=(0, 2, 3)), atol=1e-5)
    onnx.checker.check_model(result.model)


def test_matmul_add_biases_are_found_and_shared_biases_are_not():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "a"], ["y1"]), helper.make_node("Add", ["y1", "b"], ["y"]),
             helper.make_node("MatMul", ["y", "c"], ["z1"]), helper.make_node("Add", ["shared", "z1"], ["z2"]),
             helper.make_node("Add", ["z2", "shared"], ["z"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("z", F, ["N", 4])],
                       [tensor("a", rng.normal(size=(4, 4)).astype(np.float32)), tensor("b", np.zeros((1, 4), np.float32)),
                        tensor("c", rng.normal(size=(4, 4)).astype(np.float32)), tensor("shared", np.ones(4, np.float32))])
    layers, skipped = find_layers(model, [site("a"), site("c")])
    assert layers[site("a")].bias == site("b") and layers[site("a")].outputs == 4
    assert skipped == {site("c"): "its bias 'shared' is shared with other nodes"}
    s = Samples({"x": rng.random((50, 4)).astype(np.float32)}, None, "t")
    result = quantize_model(model, QuantizeOptions(bits=2, exclude=("c",), bias_correction="on"), samples=s)
    y = onnx.helper.make_tensor_value_info("y", F, None)
    for m in (model, result.model):
        m.graph.output.append(y)
    np.testing.assert_allclose(run(result.model, s, ["y"])[0].mean(0), run(model, s, ["y"])[0].mean(0), atol=1e-5)


def test_a_model_that_cannot_run_on_the_samples_is_reported_not_raised():
    model, s = conv_gemm_model(), samples(shape=(2, 4, 4))  # the wrong spatial size for the Gemm
    result = quantize_model(model, QuantizeOptions(bits=4, bias_correction="on"), samples=s)
    assert "could not be run on the samples" in result.bias_correction.error
    assert not result.bias_correction.corrected


def test_calibration_uses_a_seeded_subset_of_at_most_the_limit():
    model = conv_gemm_model()
    sites = [c.site for c in select_weights(model) if c.selected]
    a = calibrate(model, sites, samples(n=100), limit=10, seed=1)
    b = calibrate(model, sites, samples(n=100), limit=10, seed=1)
    assert a.samples == 10 and all(np.array_equal(a.means[k], b.means[k]) for k in a.means)


def test_after_a_partition_step_only_the_named_biases_move():
    model, s = conv_gemm_model(), samples()
    options = InqOptions(QuantizeOptions(bits=3), schedule=(0.5, 1.0))
    stepped, state = partition_step(model, start(model, options))
    sites = weight_sites(stepped, options.quantize)
    fixed = correct_step(model, onnx.ModelProto.FromString(stepped.SerializeToString()), list(sites.values()), s,
                         biases={"fc.b"})
    inits = lambda m: {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    before, after = inits(stepped), inits(fixed)
    assert np.array_equal(before["conv.b"], after["conv.b"]) and not np.array_equal(before["fc.b"], after["fc.b"])
    assert all(np.array_equal(before[k], after[k]) for k in ("conv.w", "fc.w"))
    assert len(fixed.graph.initializer) == len(stepped.graph.initializer)  # no new bias during INQ


@pytest.mark.parametrize("value", ["sometimes", 1])
def test_the_option_is_validated(value):
    from inq_onnx.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="bias_correction must be one of"):
        QuantizeOptions(bias_correction=value)


def test_a_model_with_external_data_is_reported_not_copied(tmp_path):
    model = conv_gemm_model()
    onnx.save(conv_gemm_model(), tmp_path / "m.onnx", save_as_external_data=True, size_threshold=0, location="m.data")
    loaded = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    sites = [c.site for c in select_weights(model) if c.selected]
    cal = calibrate(loaded, sites, samples())
    assert "external data" in cal.error and not cal.layers
