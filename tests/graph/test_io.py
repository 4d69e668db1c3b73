"""Loading refuses bad input with one clear line; saving is atomic and keeps external data."""

import os

import numpy as np
import onnx
import pytest

from inq_onnx.errors import ModelLoadError, ModelSaveError, UnsupportedModelError
from inq_onnx.graph.io import load_model, load_structure, runtime_limits, save_model
from tests.conftest import conv_gemm_model


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing.onnx", "does not exist"),
    (lambda t: t, "is a directory"),
    (lambda t: write(t, "empty.onnx", b""), "is empty"),
    (lambda t: write(t, "text.onnx", b"hello, I am text\n" * 20), "is not an ONNX model"),
    (lambda t: write(t, "cut.onnx", conv_gemm_model().SerializeToString()[:-40]), "not an ONNX model"),
    (lambda t: write(t, "tensor.onnx", onnx.numpy_helper.from_array(np.ones(3)).SerializeToString()), "not an ONNX model"),
])
@pytest.mark.parametrize("load", [load_model, load_structure])
def test_bad_files_are_refused_with_a_reason(tmp_path, make, message, load):
    with pytest.raises(ModelLoadError, match=message):
        load(make(tmp_path))


def test_load_structure_leaves_the_weights_in_the_file_and_checks_them(tmp_path):
    model = conv_gemm_model()
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    bare, source, stored = load_structure(tmp_path / "m.onnx")
    assert source.size_bytes == (tmp_path / "m.onnx").stat().st_size and not source.external_data
    assert not any(t.raw_data for t in bare.graph.initializer) and stored.nbytes == sum(len(t.raw_data) for t in model.graph.initializer)
    model.graph.initializer[2].raw_data = model.graph.initializer[2].raw_data[:-4]  # one float short
    onnx.save_model(model, str(tmp_path / "cut.onnx"))
    for load in (load_model, load_structure):
        with pytest.raises(ModelLoadError, match="tensor 'fc.w' holds 428 bytes but its type and dims"):
            load(tmp_path / "cut.onnx")
    model = conv_gemm_model()
    model.graph.node[1].input[0] = "nowhere"
    onnx.save_model(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelLoadError, match="onnx.checker"):
        load_structure(tmp_path / "bad.onnx")


def test_load_structure_loads_external_data_whole(tmp_path):
    onnx.save_model(conv_gemm_model(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    model, source, stored = load_structure(tmp_path / "m.onnx")
    assert stored is None and source.external_data and model.graph.initializer[0].raw_data


def test_too_new_ir_or_opset_is_refused():
    limits = runtime_limits()  # measured on the installed ONNX Runtime: 1.19.2 loads IR 10, opset 21
    assert limits.ir_version >= 10 and limits.opset >= 21
    model = conv_gemm_model()
    model.ir_version = limits.ir_version + 1
    model.graph.initializer.append(onnx.TensorProto(name="fp4", data_type=23, dims=[2], raw_data=b"\x21"))  # FLOAT4E2M1: IR 11
    with pytest.raises(UnsupportedModelError, match=f"IR version {limits.ir_version + 1}; the installed ONNX Runtime "
                                                    f"{limits.version} loads at most IR version {limits.ir_version}, and "):
        load_model(model)
    model = conv_gemm_model()
    model.opset_import[0].version = limits.opset + 1
    with pytest.raises(UnsupportedModelError, match=f"opset {limits.opset + 1};.* at most opset {limits.opset}"):
        load_model(model)


def test_an_ir_11_model_that_uses_nothing_of_ir_11_loads_as_it_is(tmp_path):
    """ONNX Runtime 1.19.2 reads IR 10: it gets lowered copies (graph/readers.py), the model stays IR 11."""
    model = conv_gemm_model()
    model.ir_version = 11
    assert load_model(model)[0] is model and model.ir_version == 11
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    assert load_model(tmp_path / "m.onnx")[0].ir_version == 11


def test_checker_failure_is_refused():
    model = conv_gemm_model()
    model.graph.node[1].input[0] = "nowhere"
    with pytest.raises(ModelLoadError, match="onnx.checker"):
        load_model(model)


def test_save_is_atomic_and_refuses_the_input_path(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save_model(conv_gemm_model(), str(src))
    before = src.read_bytes()
    model, source = load_model(src)
    with pytest.raises(ModelSaveError, match="is the input model"):
        save_model(model, src, source=source)
    with pytest.raises(ModelSaveError, match="does not exist"):
        save_model(model, tmp_path / "no" / "out.onnx")
    out = save_model(model, tmp_path / "out.onnx", source=source)
    assert src.read_bytes() == before and out.exists()
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "out.onnx"]  # no temporary left behind


def test_external_data_is_kept_and_checked(tmp_path):
    model = conv_gemm_model()
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    loaded, source = load_model(tmp_path / "ext.onnx")
    assert source.external_data
    out = save_model(loaded, tmp_path / "copy.onnx", external_data=True)
    assert (tmp_path / "copy.onnx.data").exists()
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(onnx.load(str(out)).graph.initializer[0]),
                                  onnx.numpy_helper.to_array(conv_gemm_model().graph.initializer[0]))
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        load_model(tmp_path / "ext.onnx")


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    model = conv_gemm_model()
    (tmp_path / "sub").mkdir()
    onnx.save_model(model, str(tmp_path / "outside.onnx"), save_as_external_data=True, location="w.data", size_threshold=0)
    m = onnx.load(str(tmp_path / "outside.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.data"
    onnx.save_model(m, str(tmp_path / "sub" / "evil.onnx"))
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(tmp_path / "sub" / "evil.onnx")


def external_model(tmp_path):
    onnx.save_model(conv_gemm_model(), str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    location="ext.onnx.data", size_threshold=0)
    return load_model(tmp_path / "ext.onnx")


def test_writer_streams_tensors_into_the_data_file(tmp_path):
    from onnx.external_data_helper import uses_external_data

    from inq_onnx.graph.io import ModelWriter
    from inq_onnx.graph.tensors import tensor_values
    from inq_onnx.graph.tensors import TensorSite

    model, source = external_model(tmp_path)
    site = TensorSite("conv.w", (), "initializer")
    new = np.full((3, 2, 3, 3), 0.25, np.float32)
    with ModelWriter(tmp_path / "out.onnx", external_data=True, source=source) as writer:
        writer.write_tensor(model, site, new)
        proto = model.graph.initializer[0]
        assert uses_external_data(proto) and not proto.HasField("raw_data")  # only a reference in memory
        writer.save(model)
    written = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    np.testing.assert_array_equal(written["conv.w"], new)
    np.testing.assert_array_equal(written["fc.w"], onnx.numpy_helper.to_array(conv_gemm_model().graph.initializer[2]))
    np.testing.assert_array_equal(tensor_values(model.graph.initializer[0], tmp_path), new)  # model refers to out
    assert not model.graph.initializer[0].HasField("raw_data")  # read into a detached copy
    assert sorted(os.listdir(tmp_path)) == ["ext.onnx", "ext.onnx.data", "out.onnx", "out.onnx.data"]


def test_save_without_keeping_the_data_leaves_references_to_the_file(tmp_path):
    from inq_onnx.graph.tensors import tensor_values

    model, source = external_model(tmp_path)
    save_model(model, tmp_path / "out.onnx", external_data=True, source=source, keep_data=False)
    expected = conv_gemm_model().graph.initializer
    for proto, original in zip(model.graph.initializer, expected):
        assert not proto.HasField("raw_data")
        np.testing.assert_array_equal(tensor_values(proto, tmp_path), onnx.numpy_helper.to_array(original))
    kept, _ = external_model(tmp_path)
    save_model(kept, tmp_path / "kept.onnx", external_data=True)  # the default keeps the data in memory
    assert all(p.HasField("raw_data") for p in kept.graph.initializer)


def test_what_a_killed_write_left_is_removed_by_the_next(tmp_path):
    stale = tmp_path / ".out.onnx.k1ll3d.tmp"
    stale.mkdir()
    (stale / "out.onnx.data").write_bytes(b"\0" * 100)
    (tmp_path / ".other.onnx.x.tmp").mkdir()  # another target's: left alone
    save_model(conv_gemm_model(), tmp_path / "out.onnx")
    assert sorted(os.listdir(tmp_path)) == [".other.onnx.x.tmp", "out.onnx"]


def test_a_new_external_output_never_sits_beside_an_old_model(tmp_path, monkeypatch):
    model, source = external_model(tmp_path)
    save_model(model, tmp_path / "out.onnx", external_data=True, source=source)
    real_replace = os.replace

    def killed_after_the_data(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".data"):
            raise KeyboardInterrupt  # as a kill between the two renames

    monkeypatch.setattr(os, "replace", killed_after_the_data)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path / "out.onnx", external_data=True, source=source)
    assert not (tmp_path / "out.onnx").exists()  # no old model that would read the new data


@pytest.mark.parametrize("external", [False, True])
def test_saved_model_keeps_its_ir_version_and_opsets(tmp_path, external):
    """onnx >= 1.18 stamps new models with a newer IR version; a saved model keeps its own."""
    model = conv_gemm_model()
    model.ir_version, model.opset_import[0].version = 7, 13
    path = save_model(model, tmp_path / "m.onnx", external_data=external)
    back = onnx.load(str(path))
    assert back.ir_version == 7 and [(o.domain, o.version) for o in back.opset_import] == [("", 13)]
