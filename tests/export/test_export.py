"""The public entry point: export(model, format, ...) from memory or a file, and what it writes."""

import importlib

import numpy as np
import onnx
import pytest

from inq_onnx.errors import ExportError, InvalidOptionError
from inq_onnx.export import ExportFormat, export
from tests.export.models import conv_gemm_model, quantized, run

X = np.random.default_rng(3).normal(size=(1, 2, 5, 5)).astype(np.float32)


def test_compact_then_float_from_files(tmp_path):
    q = quantized(conv_gemm_model(), 3)
    onnx.save(q, tmp_path / "model.inq3.onnx")
    result = export(tmp_path / "model.inq3.onnx", "compact", output=tmp_path / "model.c3.onnx")
    assert result.format is ExportFormat.COMPACT and result.path == tmp_path / "model.c3.onnx"
    compact_file = onnx.load(tmp_path / "model.c3.onnx")
    assert run(compact_file, {"x": X})[0].tobytes() == run(q, {"x": X})[0].tobytes()
    back = export(tmp_path / "model.c3.onnx", ExportFormat.FLOAT, output=tmp_path / "model.f32.onnx")
    written = onnx.load(tmp_path / "model.f32.onnx")
    assert written.SerializeToString() == q.SerializeToString() == back.model.SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c3.onnx", "model.f32.onnx", "model.inq3.onnx"]


def test_codes_in_memory_and_the_report(tmp_path):
    result = export(quantized(conv_gemm_model(), 4, per_channel=True), "codes", output=tmp_path / "codes")
    assert result.model is None and result.report.tensors == ("conv.w", "fc.w")
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["codes.safetensors", "manifest.json"]


def test_allow_float_is_passed_on():
    q = quantized(conv_gemm_model(), 4)
    conv = q.graph.initializer[0]
    conv.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(conv) * 0.7, "conv.w"))
    with pytest.raises(ExportError):
        export(q, "compact")
    assert "conv.w" in export(q, "compact", allow_float=True).kept_float[0]


def test_bad_options_are_clear():
    with pytest.raises(InvalidOptionError, match="unknown export format 'zip'.*compact, float, codes"):
        export(quantized(conv_gemm_model(), 4), "zip")
    with pytest.raises(InvalidOptionError, match="pass -o FOLDER"):
        export(quantized(conv_gemm_model(), 4), "codes")


def test_public_surface():
    export_api = importlib.import_module("inq_onnx.export")  # the package, even if inq_onnx re-exports export()
    assert set(export_api.__all__) >= {"ExportFormat", "ExportResult", "export", "decode", "to_compact", "to_float"}
