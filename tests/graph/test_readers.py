"""Readers of an older IR version (ONNX Runtime, onnx.checker) get a lowered copy, in memory or
as a staged file linked to the model's external data; the model and its files are untouched.

The runtime's limit is pinned to IR 10 (what the training build, 1.19.2, reads), so that the
same lowering is exercised on a newer ONNX Runtime, which reads IR 11 itself."""

import numpy as np
import onnx
import pytest

from inq_onnx.errors import UnsupportedModelError
from inq_onnx.graph import readers
from inq_onnx.graph.readers import Reader, RuntimeLimits, check_with_onnx, for_runtime, lowered_path
from inq_onnx.runtime import session
from tests.conftest import conv_gemm_model

FLOAT4E2M1 = 23


@pytest.fixture(autouse=True)
def runtime_reads_ir_10(monkeypatch):
    real = readers.runtime_limits()
    monkeypatch.setattr(readers, "runtime_limits", lambda: RuntimeLimits(real.version, 10, real.opset))
    return real.version


def ir11(fp4: bool = False) -> onnx.ModelProto:
    model = conv_gemm_model()
    model.ir_version = 11
    if fp4:
        model.graph.initializer.append(onnx.TensorProto(name="fp4", data_type=FLOAT4E2M1, dims=[2], raw_data=b"\x21"))
    return model


def outputs(sess) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 5)).astype(np.float32)
    return sess.run(None, {"x": x})[0]


def test_runtime_gets_a_lowered_copy_and_the_model_keeps_its_version():
    model = ir11()
    lowered = for_runtime(model)
    assert lowered.ir_version == 10 and model.ir_version == 11
    at_10 = conv_gemm_model()
    at_10.ir_version = 10
    assert for_runtime(at_10) is at_10


def test_a_model_that_cannot_be_lowered_is_one_line_naming_both_versions(runtime_reads_ir_10):
    with pytest.raises(UnsupportedModelError) as caught:
        for_runtime(ir11(fp4=True))
    message = str(caught.value)
    assert message.startswith(f"the model has IR version 11; the installed ONNX Runtime {runtime_reads_ir_10} loads "
                              "at most IR version 10, and it uses FLOAT4E2M1 (IR version 11) in tensor 'fp4'. "
                              "To fix this, install a newer onnxruntime")
    assert "\n" not in message


def test_a_file_is_staged_lowered_beside_its_external_data_and_removed(tmp_path):
    onnx.save_model(ir11(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    reader = Reader("a reader", "reader", 10)
    with lowered_path(tmp_path / "m.onnx", reader) as staged:
        assert staged.parent == tmp_path and staged.name.startswith(".m.onnx.lowered-")
        loaded = onnx.load(str(staged))
        assert loaded.ir_version == 10 and len(loaded.graph.initializer[0].raw_data) > 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with lowered_path(tmp_path / "m.onnx", Reader("a reader", "reader", 11)) as same:
        assert same == tmp_path / "m.onnx"


def test_a_file_without_external_data_is_staged_elsewhere(tmp_path):
    onnx.save_model(ir11(), str(tmp_path / "m.onnx"))
    with lowered_path(tmp_path / "m.onnx", Reader("a reader", "reader", 10)) as staged:
        assert staged.parent != tmp_path and onnx.load(str(staged)).ir_version == 10
    assert not staged.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_sessions_run_the_lowered_model_from_memory_and_from_files(tmp_path):
    expected = outputs(session(conv_gemm_model()))
    onnx.save_model(ir11(), str(tmp_path / "inline.onnx"))
    onnx.save_model(ir11(), str(tmp_path / "external.onnx"), save_as_external_data=True,
                    location="external.onnx.data", size_threshold=0)
    for model in (ir11(), str(tmp_path / "inline.onnx"), str(tmp_path / "external.onnx")):
        np.testing.assert_array_equal(outputs(session(model)), expected)


def test_the_checker_checks_a_lowered_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(readers, "onnx_checker", lambda: Reader("onnx 1.17.0", "onnx", 10, "checks"))
    check_with_onnx(ir11())
    onnx.save_model(ir11(), str(tmp_path / "m.onnx"))
    check_with_onnx(tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="the installed onnx 1.17.0 checks at most IR version 10, and it "
                                                    "uses FLOAT4E2M1"):
        check_with_onnx(ir11(fp4=True))
