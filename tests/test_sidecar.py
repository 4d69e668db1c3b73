"""The mask sidecar: round trip, atomic write, and clear refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load_file, save_file

from inq_onnx.codebook import make_codebook
from inq_onnx.codebook_range import RangeRule, make_codebook_by
from inq_onnx.errors import SidecarError
from inq_onnx.partition import PartitionStrategy
from inq_onnx.sidecar import (
    Sidecar, TensorState, check_compatible, fraction_quantized, fractions_quantized, read_sidecar,
    sidecar_path, write_sidecar,
)


def test_sidecar_module_imports_no_onnx():
    import inq_onnx.sidecar as module

    assert not re.search(r"^\s*(import|from)\s+onnx", Path(module.__file__).read_text(), re.MULTILINE)


def make_sidecar(mask_conv=None, step=0) -> Sidecar:
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 6)).astype(np.float32)
    mask_conv = np.arange(conv.size).reshape(conv.shape) % 3 == 0 if mask_conv is None else mask_conv
    tensors = {
        "model/conv1/weight": TensorState(mask_conv, make_codebook(conv, 4, channel_axes=(0,)), "float32", 2),
        "onnx::MatMul_12": TensorState(np.zeros(fc.shape, bool), make_codebook_by(fc, 4, rule=RangeRule.MSE), "float16",
                                       range_rule=RangeRule.MSE),
    }
    return Sidecar(4, (0.3, 0.5, 0.8, 0.9, 0.95, 1.0), step, PartitionStrategy.RANDOM, 7, "sha256:abc",
                   {"per_channel": True, "lr": 0.01}, tensors)


def assert_same(a: Sidecar, b: Sidecar) -> None:
    assert (a.bits, a.schedule, a.step, a.strategy, a.seed, a.fingerprint, a.options) == (
        b.bits, b.schedule, b.step, b.strategy, b.seed, b.fingerprint, b.options)
    assert a.tensors.keys() == b.tensors.keys()
    for name, t in a.tensors.items():
        u = b.tensors[name]
        assert u.mask.dtype == np.bool_ and np.array_equal(t.mask, u.mask)
        assert np.array_equal(t.codebook.n1, u.codebook.n1) and t.codebook.channel_axes == u.codebook.channel_axes
        assert (t.codebook.bits, t.dtype, t.n_pruned, t.range_rule) == (u.codebook.bits, u.dtype, u.n_pruned, u.range_rule)


def test_default_path_sits_beside_the_model():
    assert sidecar_path("out/model.inq4.onnx") == Path("out/model.inq4.inq.safetensors")
    assert sidecar_path("weights") == Path("weights.inq.safetensors")


def test_round_trip_and_the_file_is_plain_safetensors(tmp_path):
    sidecar = make_sidecar()
    path = write_sidecar(tmp_path / "m.inq.safetensors", sidecar)
    assert_same(sidecar, read_sidecar(path))
    assert [p.name for p in tmp_path.iterdir()] == ["m.inq.safetensors"]  # no temp file left
    raw = load_file(path)  # any framework: tensors are plain uint8 / int32
    assert raw["mask/model/conv1/weight"].dtype == np.uint8 and raw["n1/model/conv1/weight"].shape == (4, 1, 1, 1)
    assert raw["n1/onnx::MatMul_12"].dtype == np.int32 and raw["n1/onnx::MatMul_12"].shape == (1, 1)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hnp.arrays(np.bool_, (4, 2, 3, 3)), st.integers(-1, 5))
def test_any_mask_and_step_round_trip(tmp_path, mask, step):
    sidecar = make_sidecar(mask, step)
    assert_same(sidecar, read_sidecar(write_sidecar(tmp_path / "s.safetensors", sidecar)))


def test_fraction_quantized():
    sidecar = make_sidecar()
    shares = fractions_quantized(sidecar)
    assert shares["model/conv1/weight"] == pytest.approx(24 / 72) and shares["onnx::MatMul_12"] == 0.0
    assert shares[""] == pytest.approx(24 / 132) and fraction_quantized(np.zeros(0, bool)) == 0.0


def rewrite(path: Path, change) -> None:
    """Rewrite a sidecar's tensors and metadata through ``change(tensors, info)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        info = json.loads(f.metadata()["inq_onnx"])
    tensors = load_file(path)
    change(tensors, info)
    save_file(tensors, path, metadata={"inq_onnx": json.dumps(info)})


def test_each_tensor_records_the_rule_that_chose_its_n1_and_older_sidecars_read_as_paper(tmp_path):
    path = write_sidecar(tmp_path / "m.inq.safetensors", make_sidecar())
    rules = {name: t.range_rule for name, t in read_sidecar(path).tensors.items()}
    assert rules == {"model/conv1/weight": RangeRule.PAPER, "onnx::MatMul_12": RangeRule.MSE}
    rewrite(path, lambda t, i: [entry.pop("range") for entry in i["tensors"].values()])  # as format 1 was first written
    assert all(t.range_rule is RangeRule.PAPER for t in read_sidecar(path).tensors.values())


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-40]), "not a readable safetensors file"),
        (lambda p: p.write_bytes(p.read_bytes()[:5]), "not a readable safetensors file"),
        (lambda p: p.write_bytes(b"PK\x03\x04 this is a zip, not safetensors"), "not a readable safetensors file"),
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: save_file({"x": np.zeros(2, np.uint8)}, p), "no 'inq_onnx' metadata"),
        (lambda p: rewrite(p, lambda t, i: i.update(format_version=99)), "format version 99"),
        (lambda p: rewrite(p, lambda t, i: i.pop("seed")), "incomplete or invalid metadata"),
        (lambda p: rewrite(p, lambda t, i: i.update(strategy="biggest")), "incomplete or invalid metadata"),
        (lambda p: rewrite(p, lambda t, i: i.update(schedule=[0.5, 0.4, 1])), "invalid schedule"),
        (lambda p: rewrite(p, lambda t, i: i["tensors"]["onnx::MatMul_12"].update(range="median")),
         "incomplete or invalid metadata"),
        (lambda p: rewrite(p, lambda t, i: i.update(step=6)), "outside its 6-step schedule"),
        (lambda p: rewrite(p, lambda t, i: t.pop("n1/onnx::MatMul_12")), "do not match its metadata"),
        (lambda p: rewrite(p, lambda t, i: t.update({"mask/onnx::MatMul_12": np.full((10, 6), 2, np.uint8)})),
         "bad mask"),
        (lambda p: rewrite(p, lambda t, i: t.update({"n1/onnx::MatMul_12": np.zeros((1, 1), np.int64)})), "bad n1"),
        (lambda p: rewrite(p, lambda t, i: i["tensors"]["onnx::MatMul_12"].update(shape=[6, 10])), "bad mask"),
    ],
)
def test_damaged_sidecars_are_refused_in_one_line_naming_the_file(tmp_path, damage, problem):
    path = write_sidecar(tmp_path / "m.inq.safetensors", make_sidecar())
    damage(path)
    with pytest.raises(SidecarError, match=re.escape(problem)) as info:
        read_sidecar(path)
    message = str(info.value)
    assert str(path) in message and "To fix this, " in message and "\n" not in message


def test_a_failed_write_leaves_the_old_sidecar_and_no_temp_file(tmp_path, monkeypatch):
    path = write_sidecar(tmp_path / "m.inq.safetensors", make_sidecar())

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr("inq_onnx.sidecar.save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_sidecar(path, make_sidecar(step=3))
    assert read_sidecar(path).step == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.inq.safetensors"]


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"fingerprint": "sha256:def"}, "belongs to another model (fingerprint sha256:abc"),
        ({"bits": 5}, "was made for 4 bits, not 5"),
        ({"schedule": (0.5, 1.0)}, "schedule [0.3, 0.5, 0.8, 0.9, 0.95, 1.0], not [0.5, 1.0]"),
        ({"strategy": PartitionStrategy.MAGNITUDE}, "random partition, not magnitude"),
        ({"seed": 8}, "seed 7, not 8"),
    ],
)
def test_check_compatible_names_what_differs(changes, problem):
    run = {"fingerprint": "sha256:abc", "bits": 4, "schedule": (0.3, 0.5, 0.8, 0.9, 0.95, 1.0),
           "strategy": PartitionStrategy.RANDOM, "seed": 7}
    check_compatible(make_sidecar(), **run)
    with pytest.raises(SidecarError, match=re.escape(problem)) as info:
        check_compatible(make_sidecar(), **{**run, **changes}, source="m.inq.safetensors")
    assert "m.inq.safetensors" in str(info.value) and "To fix this, " in str(info.value)


def test_writing_refuses_an_inconsistent_sidecar(tmp_path):
    sidecar = make_sidecar()
    sidecar.tensors["x"] = TensorState(np.zeros(3, bool), make_codebook(np.ones(3), 5))
    with pytest.raises(ValueError, match="4-bit codebook"):
        write_sidecar(tmp_path / "s.safetensors", sidecar)
    with pytest.raises(ValueError):
        make_sidecar(step=6)


def test_the_documented_snippet_reads_a_sidecar(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## The mask sidecar", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    write_sidecar(tmp_path / "model.inq.safetensors", make_sidecar())
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)
    assert np.array_equal(scope["masks"]["model/conv1/weight"], make_sidecar().tensors["model/conv1/weight"].mask)
    assert scope["info"]["bits"] == 4
    assert np.array_equal(scope["n2"]["onnx::MatMul_12"], scope["n1"]["onnx::MatMul_12"] - 3)
