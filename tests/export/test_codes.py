"""Codes export: the codes and n2 of the manifest rebuild every weight exactly, and the folder is
written whole or not at all."""

import json

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file

from inq_onnx.errors import ExportError, ModelSaveError
from inq_onnx.export import codes, to_compact
from inq_onnx.graph.tensors import constant_sites, iter_graphs, to_array
from tests.conftest import tensor
from tests.export.models import branch_model, conv_gemm_model, quantized


def read(folder):
    manifest = json.loads((folder / codes.MANIFEST_FILE).read_text())
    return manifest, load_file(str(folder / codes.CODES_FILE))


def rebuild(entry: dict, c: np.ndarray) -> np.ndarray:
    """What a shift-based kernel computes: sign(c) · 2^(n2 + |c| - 1), 0 for c = 0."""
    n2 = np.asarray(entry["n2"], dtype=np.int64)
    if entry["channel_axes"]:
        n2 = n2.reshape([d if i in entry["channel_axes"] else 1 for i, d in enumerate(entry["shape"])])
    c = c.astype(np.int64)
    return np.where(c == 0, 0.0, np.sign(c) * np.ldexp(1.0, n2 + np.abs(c) - 1))


def constants(model) -> dict[tuple[str, str], np.ndarray]:
    return {(s.name, codes.path_label(s.graph_path)): to_array(p)
            for path, g in iter_graphs(model.graph) for s, p in constant_sites(g, path)}


@pytest.mark.parametrize("per_channel", [False, True])
def test_manifest_and_codes_rebuild_every_weight(tmp_path, per_channel):
    q = quantized(conv_gemm_model(), 5, per_channel)
    report = codes.export_codes(q, tmp_path / "out.codes")
    manifest, arrays = read(tmp_path / "out.codes")
    assert manifest["format"] == codes.FORMAT and manifest["decode"] == codes.DECODE_RULE
    assert set(arrays) == set(manifest["tensors"]) == set(report.tensors) == {"conv.w", "fc.w"}
    values = constants(q)
    for key, entry in manifest["tensors"].items():
        assert arrays[key].dtype == np.int8 and list(arrays[key].shape) == entry["shape"] and entry["bits"] == 5
        np.testing.assert_array_equal(rebuild(entry, arrays[key]), values[(key, "main")])
        assert entry["channel_axes"] == ([0] if per_channel else []) and entry["dtype"] == "float32"
    conv_feeds = [{"node": "conv", "op_type": "Conv", "input": 1, "graph": "main", "via": []}]
    assert manifest["tensors"]["conv.w"]["feeds"] == conv_feeds
    assert manifest["tensors"]["fc.w"]["feeds"][0]["op_type"] == "Gemm"


def test_same_name_in_two_branches_gets_two_keys_and_compact_input_gives_the_same_codes(tmp_path):
    q = branch_model()
    codes.export_codes(q, tmp_path / "a")
    c, _ = to_compact(q)
    codes.export_codes(c, tmp_path / "b")
    (manifest, arrays), (_, again) = read(tmp_path / "a"), read(tmp_path / "b")
    assert sorted(arrays) == ["W", "Wb@0:else_branch", "Wb@0:then_branch"]
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    values = constants(q)
    for key, entry in manifest["tensors"].items():
        np.testing.assert_array_equal(rebuild(entry, arrays[key]), values[(entry["name"], entry["graph"])])
    assert manifest["tensors"]["W"]["feeds"] == [{"node": "mm_outer", "op_type": "MatMul", "input": 1,
                                                  "graph": "0:else_branch", "via": []}]


def test_folder_is_replaced_only_when_it_is_a_codes_export(tmp_path):
    q = quantized(conv_gemm_model(), 4)
    target = tmp_path / "out.codes"
    codes.export_codes(q, target)
    codes.export_codes(quantized(conv_gemm_model(seed=1), 4), target)  # replaces the earlier export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.codes"]  # no temporary folder left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ModelSaveError, match="is not a codes export"):
        codes.export_codes(q, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ModelSaveError, match="does not exist"):
        codes.export_codes(q, tmp_path / "missing" / "out")


def test_off_codebook_weight_is_refused_or_left_out(tmp_path):
    q = quantized(conv_gemm_model(), 4)
    fc = next(i for i in q.graph.initializer if i.name == "fc.w")
    fc.CopyFrom(tensor("fc.w", onnx.numpy_helper.to_array(fc) + 0.01))
    with pytest.raises(ExportError, match="'fc.w'.*as integer codes.*--allow-float"):
        codes.export_codes(q, tmp_path / "x")
    report = codes.export_codes(q, tmp_path / "x", allow_float=True)
    manifest, _ = read(tmp_path / "x")
    assert report.tensors == ("conv.w",) and "'fc.w'" in manifest["kept_float"][0]
