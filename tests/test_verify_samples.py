"""Verification runs ONNX Runtime on real samples when given: a model that rejects random inputs
is still run, rather than skipped."""

import numpy as np
from onnx import TensorProto, helper

import inq_onnx
from inq_onnx.data import Samples
from inq_onnx.verify import verify
from tests.conftest import make_model, tensor


def picky_model():
    """y = reshape(x, [-1, 7, 7]) @ W: only rows of a multiple of 49 values run; the random
    candidates (1, 32, 640 values) all fail in ONNX Runtime."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    w = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    return make_model(nodes, [helper.make_tensor_value_info("x", f, ["batch", "length"])],
                      [helper.make_tensor_value_info("y", f, ["batch", 7, 4])],
                      [tensor("shape", np.array([-1, 7, 7], np.int64)), tensor("w", w)])


def test_a_model_that_rejects_random_inputs_is_run_on_the_samples():
    model = picky_model()
    quantized = inq_onnx.quantize(model, bits=4).model
    assert verify(quantized, reference=model).run_shapes == {}  # random inputs: nothing ran
    samples = Samples({"x": np.random.default_rng(1).random((3, 49), dtype=np.float32)}, None, "val", {"x": 0})
    report = verify(quantized, reference=model, samples=samples)
    assert report.ran_on_samples and report.run_shapes == {"x": [1, 49]}
    assert report.fidelity.samples == 3
    run_only = verify(quantized, reference=model, run_on=samples)
    assert run_only.ran_on_samples and run_only.fidelity is None


def test_random_inputs_when_no_samples_are_given():
    from tests.conftest import conv_gemm_model

    model = conv_gemm_model()
    report = verify(inq_onnx.quantize(model, bits=4).model, reference=model)
    assert report.run_shapes and not report.ran_on_samples
