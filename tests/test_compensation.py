"""Error feedback on models: which weights have a measurable layer input, the Gram matrices
ONNX Runtime measures, and a partition step that rounds by feedback."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from inq_onnx import feedback
from inq_onnx.compensation import LayerInput, feedback_rounder, find_inputs, measure_grams
from inq_onnx.data import Samples
from inq_onnx.errors import InvalidOptionError
from inq_onnx.graph.tensors import TensorSite, read_tensor
from inq_onnx.incremental import InqOptions, check_sidecar, partition_step, quantize_options_of, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.runtime import session
from tests.conftest import conv_gemm_model, make_model, tensor

F = TensorProto.FLOAT


def site(name: str) -> TensorSite:
    return TensorSite(name, (), "initializer")


def samples(n=24, seed=0) -> Samples:
    return Samples({"x": np.random.default_rng(seed).random((n, 2, 5, 5)).astype(np.float32)}, None, "test")


def matmul_model(shared: bool = False):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    if shared:
        nodes.append(helper.make_node("MatMul", ["x", "w2"], ["z"]))
    outputs = [helper.make_tensor_value_info(n, F, None) for n in (["y", "z"] if shared else ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 6])], outputs,
                      [tensor("w", rng.normal(size=(6, 6)).astype(np.float32)),
                       tensor("w2", rng.normal(size=(6, 6)).astype(np.float32))])


def test_conv_and_gemm_inputs_are_found_with_their_layout():
    found, skipped = find_inputs(conv_gemm_model(), [site("conv.w"), site("fc.w")])
    assert skipped == {}
    assert found[site("conv.w")] == LayerInput("Conv", "x", kernel=(3, 3), strides=(1, 1), pads=(0, 0, 0, 0),
                                               dilations=(1, 1))
    assert found[site("fc.w")] == LayerInput("Gemm", "f", trans_b=True)


def test_a_weight_read_twice_has_no_single_layer_input():
    found, skipped = find_inputs(matmul_model(shared=True), [site("w"), site("w2")])
    assert list(found) == [site("w")]
    assert skipped[site("w2")] == "not the weight of one Conv, Gemm or MatMul"


@pytest.mark.parametrize("layer,shape", [(LayerInput("Conv", "x", group=2), (4, 3, 2, 2)),
                                         (LayerInput("Gemm", "x", trans_b=True), (5, 7)),
                                         (LayerInput("Gemm", "x"), (7, 5)), (LayerInput("MatMul", "x"), (7, 5))])
def test_rows_are_outputs_by_inputs_and_map_back(layer, shape):
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    rows = layer.rows(w)
    assert rows.shape[-1] == (12 if layer.op_type == "Conv" else 7)
    assert np.array_equal(layer.weights(rows, shape), w)


def test_measured_grams_are_those_of_the_layer_inputs():
    model, s = conv_gemm_model(), samples()
    found, _ = find_inputs(model, [site("conv.w"), site("fc.w")])
    grams = measure_grams(model, found, s, rows=10 ** 6)
    x = s.inputs["x"].astype(np.float64)
    patches = feedback.conv_patches(x, (3, 3), strides=(1, 1), pads=(0,) * 4, dilations=(1, 1)).reshape(-1, 18)
    assert np.allclose(grams[site("conv.w")][0], patches.T @ patches, rtol=1e-4)
    exposed = session(model).get_outputs()  # the model itself is not changed
    assert [o.name for o in exposed] == ["y"]
    assert grams[site("fc.w")].shape == (1, 27, 27)


def test_a_feedback_step_keeps_frozen_weights_and_lowers_the_output_error():
    model, s = conv_gemm_model(), samples()
    options = InqOptions(QuantizeOptions(bits=3, range="paper"), schedule=(0.5, 1.0))
    sidecar = start(model, options)
    sites = weight_sites(model, options.quantize)
    rounder = feedback_rounder(model, list(sites.values()), s)
    assert set(rounder.grams) == set(sites.values()) and rounder.skipped == {}
    nearest, _ = partition_step(model, sidecar)
    fed, state = partition_step(model, sidecar, rounder)
    check_sidecar(fed, state, options)
    x = s.take(slice(None))
    ref = session(model).run(None, x)[0]
    error = {name: float(np.mean((session(m).run(None, x)[0] - ref) ** 2)) for name, m in (("near", nearest), ("fed", fed))}
    assert error["fed"] < error["near"]
    last, done = partition_step(fed, state, feedback_rounder(fed, list(sites.values()), s))
    check_sidecar(last, done, options)
    for key, t in done.tensors.items():
        w = read_tensor(last, sites[key])
        assert t.mask.all() and np.array_equal(w[state.tensors[key].mask], read_tensor(fed, sites[key])[state.tensors[key].mask])


def test_weights_without_a_layer_input_round_to_nearest_and_say_why():
    model = matmul_model(shared=True)
    options = InqOptions(QuantizeOptions(bits=4, range="paper"), schedule=(0.5, 1.0))
    sidecar = start(model, options)
    s = Samples({"x": np.random.default_rng(0).random((8, 3, 6)).astype(np.float32)}, None, "test")
    sites = weight_sites(model, options.quantize)
    rounder = feedback_rounder(model, list(sites.values()), s)
    assert rounder.skipped == {"w2": "not the weight of one Conv, Gemm or MatMul"}
    fed, state = partition_step(model, sidecar, rounder)
    nearest, _ = partition_step(model, sidecar)
    assert np.array_equal(read_tensor(fed, sites["w2"]), read_tensor(nearest, sites["w2"]))
    assert not np.array_equal(read_tensor(fed, sites["w"]), read_tensor(nearest, sites["w"]))


def test_a_model_that_cannot_run_on_the_samples_rounds_to_nearest():
    model = conv_gemm_model()
    bad = Samples({"x": np.zeros((4, 3, 5, 5), np.float32)}, None, "test")  # 3 channels, the Conv takes 2
    rounder = feedback_rounder(model, [site("conv.w"), site("fc.w")], bad)
    assert rounder.grams == {} and rounder.skipped["fc.w"].startswith("the model could not be run")


def test_rounding_is_an_option_and_old_sidecars_round_to_nearest():
    assert QuantizeOptions().rounding.value == "feedback"
    with pytest.raises(InvalidOptionError, match="rounding must be one of"):
        QuantizeOptions(rounding="stochastic")
    sidecar = start(conv_gemm_model(), InqOptions(QuantizeOptions(bits=4)))
    old = type(sidecar)(**{**sidecar.__dict__, "options": {k: v for k, v in sidecar.options.items() if k != "rounding"}})
    assert quantize_options_of(old)["rounding"] == "nearest"
    assert quantize_options_of(sidecar)["rounding"] == "feedback"


def test_layers_over_the_memory_budget_round_to_nearest(monkeypatch):
    from inq_onnx import compensation

    model, s = conv_gemm_model(), samples()
    assert LayerInput("Gemm", "f", trans_b=True).gram_bytes((4, 27)) == 27 * 27 * 8
    assert LayerInput("Conv", "x", group=2).gram_bytes((4, 3, 2, 2)) == 2 * 12 * 12 * 8
    monkeypatch.setattr(compensation, "LAYER_BYTES", 27 * 27 * 8 - 1)
    rounder = feedback_rounder(model, [site("conv.w"), site("fc.w")], s)
    assert set(rounder.grams) == {site("conv.w")} and rounder.skipped["fc.w"].startswith("too many inputs")
    monkeypatch.setattr(compensation, "LAYER_BYTES", 1 << 20)
    monkeypatch.setattr(compensation, "TOTAL_BYTES", 18 * 18 * 8)
    rounder = feedback_rounder(model, [site("conv.w"), site("fc.w")], s)
    assert set(rounder.grams) == {site("conv.w")} and rounder.skipped["fc.w"].startswith("the statistics of the layers")
