"""File-to-file jobs: a model with external data is quantized in place and streamed into the
output's data file, giving the same values as the in-memory API, and verified from the files."""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import inq_onnx
from inq_onnx.jobs import quantize_file
from inq_onnx.options import QuantizeOptions
from tests.conftest import conv_gemm_model


def test_external_data_model_is_streamed_to_an_external_data_output(tmp_path):
    onnx.save_model(conv_gemm_model(), str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    before = {p: (tmp_path / p).read_bytes() for p in ("m.onnx", "m.onnx.data")}
    job = quantize_file(tmp_path / "m.onnx", tmp_path / "out.onnx", QuantizeOptions(bits=4))
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data", "out.onnx", "out.onnx.data"]
    skeleton = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in skeleton.graph.initializer)
    expected = {t.name: numpy_helper.to_array(t) for t in inq_onnx.quantize(conv_gemm_model(), bits=4).model.graph.initializer}
    written = onnx.load(str(tmp_path / "out.onnx"))
    for t in written.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(t), expected[t.name])
    assert job.verification.checked_tensors == 2 and job.verification.run_shapes
    assert not any(t.HasField("raw_data") for t in job.result.model.graph.initializer)  # refers to the output


def test_inline_model_is_streamed_into_its_output_file(tmp_path):
    model = conv_gemm_model()
    model.graph.initializer[1].doc_string = "kept"  # a bias between two weights: written in its place, as it was
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    job = quantize_file(tmp_path / "m.onnx", tmp_path / "out.onnx", QuantizeOptions(bits=4))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "out.onnx"]
    expected = inq_onnx.quantize(model, bits=4).model
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert written.SerializeToString() == expected.SerializeToString()
    streamed = {t.name for t in job.result.model.graph.initializer if not t.raw_data}
    assert streamed == {t.name for t in job.result.quantized}  # only the written file holds them


@pytest.mark.parametrize("dtype, per_channel", [(np.float32, False), (np.float32, True), (np.float16, True)])
def test_weights_streamed_a_block_at_a_time_are_the_in_memory_ones(tmp_path, monkeypatch, dtype, per_channel):
    from inq_onnx import codebook

    model = conv_gemm_model(dtype=dtype)
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    expected = inq_onnx.quantize(model, bits=4, per_channel=per_channel)
    monkeypatch.setattr(codebook, "CACHE_BLOCK", 10)  # a row or two per block: conv.w in 3 blocks, fc.w in 4
    job = quantize_file(tmp_path / "m.onnx", tmp_path / "out.onnx", QuantizeOptions(bits=4, per_channel=per_channel),
                        check=False)
    assert onnx.load(str(tmp_path / "out.onnx")).SerializeToString() == expected.model.SerializeToString()
    assert [t.name for t in job.result.quantized] == [t.name for t in expected.quantized] == ["conv.w", "fc.w"]
    for streamed, whole in zip(job.result.quantized, expected.quantized):
        assert streamed.fraction_zero == whole.fraction_zero
        assert streamed.rel_l2_error == pytest.approx(whole.rel_l2_error, rel=1e-12)


def test_inline_model_with_nothing_to_quantize_is_written_as_it_was(tmp_path):
    model = conv_gemm_model()
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    job = quantize_file(tmp_path / "m.onnx", tmp_path / "out.onnx", QuantizeOptions(bits=4, exclude=("*",)), check=False)
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert not job.result.quantized and written.graph.SerializeToString() == model.graph.SerializeToString()
    assert job.result.model.graph.SerializeToString() == model.graph.SerializeToString()


def test_inline_model_with_samples_keeps_its_result_in_memory(tmp_path):
    onnx.save_model(conv_gemm_model(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "val.npz", x=np.random.default_rng(0).standard_normal((8, 2, 5, 5)).astype(np.float32))
    job = quantize_file(tmp_path / "m.onnx", tmp_path / "out.onnx", QuantizeOptions(bits=4),
                        samples_path=tmp_path / "val.npz", check=False)
    assert job.result.model.SerializeToString() == onnx.load(str(tmp_path / "out.onnx")).SerializeToString()


def ir11_files(tmp_path, external: bool = False):
    """conv_gemm_model stamped IR 11 (what onnx >= 1.18 writes) as a file, and 16 labelled samples."""
    model = conv_gemm_model()
    model.ir_version = 11
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=external, location="m.onnx.data",
                    size_threshold=0)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(16, 2, 5, 5)).astype(np.float32), labels=rng.integers(0, 4, 16))
    return tmp_path / "m.onnx", tmp_path / "d.npz", model


@pytest.mark.parametrize("external", [False, True])
def test_an_ir_11_model_is_quantized_and_keeps_its_ir_version_and_opsets(tmp_path, external):
    """ONNX Runtime 1.19.2 and onnx 1.17's checker read IR 10: they get lowered copies."""
    path, data, model = ir11_files(tmp_path, external)
    job = quantize_file(path, tmp_path / "out.onnx", QuantizeOptions(bits=4), samples_path=data)
    written = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    assert written.ir_version == 11 and written.opset_import == model.opset_import
    assert job.verification.run_shapes and job.verification.fidelity.samples == 16
    assert not [p.name for p in tmp_path.iterdir() if "lowered" in p.name]


@pytest.mark.training
def test_full_inq_retrains_an_ir_11_model_and_keeps_its_ir_version(tmp_path):
    from inq_onnx.incremental import InqOptions
    from inq_onnx.jobs import inq_file
    from inq_onnx.train.options import TrainOptions

    path, data, model = ir11_files(tmp_path)
    job = inq_file(path, tmp_path / "out.onnx", InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 1.0)),
                   TrainOptions(epochs_per_step=1, lr=0.01), data=data)
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert written.ir_version == 11 and written.opset_import == model.opset_import
    assert any(r.get("train_loss") for r in job.records) and job.verification.checked_tensors == 2
    training = onnx.load(str(job.run_dir / "artifacts" / "training_model.onnx"), load_external_data=False)
    assert training.ir_version == 10  # the copy the training build (1.19.2) trains was lowered


def test_a_step_with_samples_rounds_by_error_feedback(tmp_path):
    from inq_onnx.incremental import InqOptions, check_sidecar
    from inq_onnx.jobs import step_file
    from inq_onnx.sidecar import read_sidecar

    onnx.save_model(conv_gemm_model(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((16, 2, 5, 5)).astype(np.float32))
    inq = InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 1.0))
    fed, _, state = step_file(tmp_path / "m.onnx", tmp_path / "fed.onnx", inq, samples_path=tmp_path / "x.npz")
    near, _, _ = step_file(tmp_path / "m.onnx", tmp_path / "near.onnx", inq)
    a, b = onnx.load(str(fed)), onnx.load(str(near))
    check_sidecar(a, read_sidecar(tmp_path / "fed.inq.safetensors"), inq)
    w = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    v = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    mask = state.tensors["conv.w"].mask
    assert not np.array_equal(w["conv.w"][~mask], v["conv.w"][~mask])  # the float half took the error
