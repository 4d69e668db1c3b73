"""Packaging: the package list in pyproject.toml names every package folder (an explicit list
silently drops a new subpackage from a normal install) and no top-level `cli` package; no install
asks for both ONNX Runtime packages; without the training build every training entry point
fails first, in one line, writing nothing."""

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from packaging.requirements import Requirement

from inq_onnx.errors import TrainingError
from inq_onnx.train import ort_training
from tests.conftest import FIXTURE, conv_gemm_model

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "inq_onnx").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"
    assert "cli" not in listed and config["package-dir"]["inq_onnx_cli"] == "cli"


# --- one ONNX Runtime at a time: what each install resolves to, on each Python we support ----

ORT_PACKAGES = {"onnxruntime", "onnxruntime-training-cpu"}  # both install the `onnxruntime` module


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def ort_packages(extras: tuple[str, ...], python: str) -> set[str]:
    """The ORT packages ``pip install inq-onnx[extras]`` asks for on ``python`` (e.g. "3.11")."""
    reqs = [Requirement(r) for r in project()["dependencies"]]
    reqs += [Requirement(r) for e in extras for r in project()["optional-dependencies"][e]]
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    return {r.name for r in reqs if r.name in ORT_PACKAGES and (r.marker is None or r.marker.evaluate(env))}


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13", "3.14"])
def test_no_install_asks_for_both_onnxruntime_packages(python):
    for extras in [(), ("runtime",), ("train",), ("ir",), ("test",), ("train", "ir", "test"), ("runtime", "ir")]:
        assert len(ort_packages(extras, python)) <= 1, (python, extras)
    assert ort_packages(("runtime",), python) == {"onnxruntime"}
    base = ort_packages((), python)
    if python >= "3.12":  # no training build exists there: the base install brings the runtime
        assert base == {"onnxruntime"} and ort_packages(("train",), python) == {"onnxruntime"}
    else:  # either may serve: the base install takes the one that is there, the extras bring one
        assert base == set() and ort_packages(("train",), python) == {"onnxruntime-training-cpu"}


def test_requirements_have_lower_bounds_and_no_needless_upper_pins():
    for text in project()["dependencies"] + project()["optional-dependencies"]["runtime"]:
        req = Requirement(text)
        assert any(s.operator == ">=" for s in req.specifier), text
        assert not any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), text
    assert project()["requires-python"] == ">=3.10"
    # the training build, and onnx < 1.18 with it (newer onnx makes it write artifacts it cannot load)
    train = {Requirement(r).name: Requirement(r) for r in project()["optional-dependencies"]["train"]}
    assert str(train["onnxruntime-training-cpu"].specifier) == "==1.19.2"
    assert not train["onnx"].specifier.contains("1.18.0") and train["onnx"].specifier.contains("1.17.0")


# --- without the training build: every training entry point fails first, in one line ---------

@pytest.fixture
def no_training_build(monkeypatch):
    """As on Python >= 3.12 or with the plain onnxruntime package: the training API does not import."""
    ort_training.load_training_api.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime.training", None)
    yield
    ort_training.load_training_api.cache_clear()


def digits(tmp_path):
    d = np.load(FIXTURE.parent / "digits.npz")
    path = tmp_path / "train.npz"
    np.savez(path, input=(d["x_train"][:64] / 16).astype(np.float32), labels=d["y_train"][:64])
    return path


def check_training_error(error: TrainingError) -> None:
    text = str(error)
    assert "\n" not in text and "training build" in text
    assert "Python 3.10 or 3.11" in text and "pip install 'inq-onnx[train]'" in text


def test_cli_quantize_with_data_is_one_line_and_writes_nothing(no_training_build, tmp_path, capsys):
    from inq_onnx_cli.main import main

    data = digits(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code = main(["quantize", str(FIXTURE), "--data", str(data), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: retraining needs ONNX Runtime's training build")
    assert "pip install 'inq-onnx[train]'" in err[0] and "Python 3.10 or 3.11" in err[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_api_entry_points_fail_first_and_write_nothing(no_training_build, tmp_path):
    from inq_onnx.data import load_samples
    from inq_onnx.incremental import InqOptions
    from inq_onnx.jobs import inq_file
    from inq_onnx.options import QuantizeOptions
    from inq_onnx.train.artifacts import build_artifacts
    from inq_onnx.train.loop import retrain
    from inq_onnx.train.options import TrainOptions

    data, inq = digits(tmp_path), InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 1.0))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(TrainingError) as caught:
        inq_file(FIXTURE, tmp_path / "out.onnx", inq, TrainOptions(), data=data)
    check_training_error(caught.value)
    model = onnx.load(str(FIXTURE))
    with pytest.raises(TrainingError) as caught:
        retrain(model, load_samples(data, model, num_classes=10), inq=inq, options=TrainOptions(), run_dir=tmp_path / "run")
    check_training_error(caught.value)
    with pytest.raises(TrainingError) as caught:
        build_artifacts(conv_gemm_model(), trainable=["conv.w"], folder=tmp_path / "artifacts")
    check_training_error(caught.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_training_build_is_found_when_installed():
    """The pinned stack (`make test`) has it: there the training tests run, nowhere skipped by mistake."""
    wanted = os.environ.get("INQ_ONNX_EXPECT_TRAINING")
    if wanted is None:
        pytest.skip("set INQ_ONNX_EXPECT_TRAINING=1 or 0 (the Makefile does) to check which stack this is")
    assert ort_training.training_available() is (wanted == "1")


# --- the import check: exactly one ONNX Runtime package ------------------------------------

def test_import_check_passes_here_and_names_what_to_install_otherwise(monkeypatch):
    import importlib.util
    from importlib import metadata

    import inq_onnx

    inq_onnx._check_onnxruntime()  # this environment has exactly one
    real_version, real_find_spec = metadata.version, importlib.util.find_spec

    def both(name):
        return "1.19.2" if name in ("onnxruntime", "onnxruntime-training-cpu") else real_version(name)

    monkeypatch.setattr(metadata, "version", both)
    with pytest.raises(ImportError, match=r"onnxruntime 1.19.2 and onnxruntime-training-cpu 1.19.2 are installed "
                                          r"side by side.*pip uninstall -y onnxruntime onnxruntime-training-cpu"):
        inq_onnx._check_onnxruntime()

    def none(name):
        if name in inq_onnx.ONNXRUNTIME_PACKAGES:
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", none)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"needs ONNX Runtime and none is installed.*pip install 'inq-onnx\[runtime\]'"):
        inq_onnx._check_onnxruntime()
