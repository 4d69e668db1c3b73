"""onnx_ir.Model through the public API and as passes: same type out as in, the same numbers as
the ModelProto path, the input left as it is, IR version and opsets kept, chainable in a
PassManager. The README's pipeline example (torch.onnx.export -> onnxscript optimizer -> INQ ->
compact -> onnxruntime) runs last, where torch and onnxscript are installed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import inq_onnx
from inq_onnx.errors import UnsupportedModelError
from inq_onnx.runtime import session
from tests.conftest import conv_gemm_model

ir = pytest.importorskip("onnx_ir", reason="onnx-ir is in the test extra: pip install -e '.[test]'")
from inq_onnx.ir_passes import CompactPass, QuantizePass  # noqa: E402
from onnx_ir.passes.common import RemoveUnusedNodesPass  # noqa: E402

X = np.random.default_rng(1).normal(size=(2, 2, 5, 5)).astype(np.float32)


def run(model) -> np.ndarray:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return session(proto).run(None, {"x": X})[0]


def weights(model) -> dict[str, np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def float_model(ir_version: int = 8) -> onnx.ModelProto:
    model = conv_gemm_model()
    model.ir_version = ir_version
    return model


def test_quantize_takes_and_returns_an_ir_model_with_the_numbers_of_the_proto_path():
    proto = float_model()
    model = ir.from_proto(proto)
    before = ir.to_proto(model).SerializeToString()
    got = inq_onnx.quantize(model, bits=4)
    want = inq_onnx.quantize(proto, bits=4)
    assert isinstance(got.model, ir.Model) and isinstance(want.model, onnx.ModelProto)
    assert [t.name for t in got.quantized] == [t.name for t in want.quantized] == ["conv.w", "fc.w"]
    for name, values in weights(want.model).items():
        np.testing.assert_array_equal(weights(got.model)[name], values)
    assert ir.to_proto(model).SerializeToString() == before  # the input is left as it is


def test_export_takes_and_returns_an_ir_model():
    quantized = inq_onnx.quantize(float_model(), bits=4).model
    got = inq_onnx.export(ir.from_proto(quantized), "compact")
    want = inq_onnx.export(quantized, "compact")
    assert isinstance(got.model, ir.Model) and got.report.packed_bytes == want.report.packed_bytes
    np.testing.assert_array_equal(run(got.model), run(want.model))
    assert inq_onnx.export(ir.from_proto(quantized), "float").model.ir_version == quantized.ir_version


@pytest.mark.parametrize("ir_version", [8, 10])
def test_pass_manager_chains_inq_and_compact_keeping_ir_version_and_opsets(ir_version):
    proto = float_model(ir_version)
    model = ir.from_proto(proto)
    before = ir.to_proto(model).SerializeToString()
    inq, compact = QuantizePass(bits=4), CompactPass()
    result = ir.passes.PassManager([RemoveUnusedNodesPass(), inq, compact], steps=1)(model)
    assert result.modified and isinstance(result.model, ir.Model) and result.model is not model
    assert ir.to_proto(model).SerializeToString() == before  # functional passes
    assert [t.name for t in inq.result.quantized] == ["conv.w", "fc.w"] and len(compact.result.report.tensors) == 2
    out = ir.to_proto(result.model)
    assert out.ir_version == ir_version and out.opset_import[0].version == proto.opset_import[0].version
    # the same numbers as the ModelProto path, and close to the float model
    reference = inq_onnx.export(inq_onnx.quantize(proto, bits=4).model, "compact").model
    np.testing.assert_array_equal(run(result.model), run(reference))
    float_out = run(proto)
    assert np.linalg.norm(run(result.model) - float_out) < 0.5 * np.linalg.norm(float_out)


def test_quantize_pass_on_a_model_without_weights_reports_no_change():
    proto = float_model()
    for init in proto.graph.initializer:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    del proto.graph.initializer[:]
    inq = QuantizePass(bits=4)
    result = inq(ir.from_proto(proto))
    assert not result.modified and inq.result.quantized == ()


def test_external_tensors_of_an_ir_model_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(float_model(), str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    model = ir.load(str(path))  # its initializers stay in m.data until loaded
    with pytest.raises(UnsupportedModelError, match="load_to_model"):
        inq_onnx.quantize(model, bits=4)


def test_readme_pipeline_torch_export_optimizer_inq_compact_onnxruntime():
    torch = pytest.importorskip("torch", reason="the README pipeline example needs torch (not a test dependency)")
    onnxscript = pytest.importorskip("onnxscript", reason="the README pipeline example needs onnxscript")

    # --- README example (keep in step with the README's "Pipelines" section) ---
    import onnxruntime as ort

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 4)).eval()
    example = torch.randn(1, 2, 5, 5)
    program = torch.onnx.export(net, (example,), dynamo=True)           # an ONNXProgram: .model is an onnx_ir.Model
    model = onnxscript.optimizer.optimize(program.model)                 # onnxscript's optimizer, on the IR
    model = ir.passes.PassManager([QuantizePass(bits=4), CompactPass()])(model).model
    runner = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = runner.run(None, {runner.get_inputs()[0].name: example.numpy()})
    # --- end of the README example ---

    with torch.no_grad():
        want = net(example).numpy()
    assert y.shape == want.shape and np.linalg.norm(y - want) < 0.5 * np.linalg.norm(want)
    assert len(ir.to_proto(model).functions) > 0  # the compact form decodes its weights in model-local functions
