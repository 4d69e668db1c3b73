"""The command as a user runs it: output, exit codes, one-line errors, input never modified."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.conftest import FIXTURE, REPO

CLI = [sys.executable, "-m", "inq_onnx_cli.main"]


def run(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_quantize_writes_verifies_and_reports(tmp_path):
    out = tmp_path / "q.onnx"
    before = FIXTURE.read_bytes()
    proc = run("quantize", FIXTURE, "--bits", "4", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "quantized 4 tensors (9,736 weights) to 4 bits" in proc.stdout
    assert "verified: onnx.checker ok, 4 tensors in their codebook" in proc.stdout
    assert out.exists() and FIXTURE.read_bytes() == before
    assert proc.stderr == ""


def test_quantize_json_and_fidelity_with_labels(tmp_path):
    digits = np.load(FIXTURE.parent / "digits.npz")
    val = tmp_path / "val.npz"
    np.savez(val, input=digits["x_test"].astype(np.float32) / 16.0, labels=digits["y_test"])
    proc = run("quantize", FIXTURE, "--bits", "5", "--per-channel", "--val", val, "-o", tmp_path / "q.onnx", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    fid = report["verification"]["fidelity"]
    assert fid["samples"] == 359 and abs(fid["accuracy_float"] - 0.9694) < 1e-3
    assert 0.5 < fid["top1_agreement"] <= 1.0
    assert all(t["channel_axes"] == [0] for t in report["tensors"] if t["quantized"])


def test_default_output_name_beside_the_input(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(FIXTURE.read_bytes())
    assert run("quantize", model, "--bits", "3", "-q").returncode == 0
    assert (tmp_path / "m.inq3.onnx").exists()


def test_inspect_lists_weights_and_reasons():
    proc = run("inspect", FIXTURE)
    assert proc.returncode == 0
    assert "4 weights (9,736 values) would be quantized" in proc.stdout
    assert "conv1.bias: bias (input 2) of Conv 'conv1'" in proc.stdout
    assert "  Conv: trains\n" in proc.stdout and "blocks training" not in proc.stdout


def test_inspect_says_per_op_whether_retraining_gets_through(tmp_path):
    from tests.train.train_helpers import model_from_text, rand

    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,5,5] x) => (float[N,4,1,1] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  p = GlobalMaxPool (c)
  y = CumSum (p, axis)
}
"""
    path = tmp_path / "m.onnx"
    onnx.save(model_from_text(text, W=rand(4, 3, 3, 3), axis=np.array(1)), path)
    out = run("inspect", path).stdout
    assert "  GlobalMaxPool: trains through a rewrite (globalmaxpool_to_maxpool, with a static spatial size)\n" in out
    assert "  CumSum: blocks training (no gradient builder); quantize one shot without --data, or run" in out
    report = json.loads(run("inspect", path, "--json").stdout)
    assert [w["name"] for w in report["weights"]] == ["W"]
    assert [(op["op"], op["status"]) for op in report["gradient_path"]] == [
        ("Conv", "trains"), ("GlobalMaxPool", "trains through a rewrite"), ("CumSum", "blocks training")]


@pytest.mark.parametrize("args, fragment", [
    (["quantize", "missing.onnx"], "does not exist"),
    (["quantize", "{fixture}", "--bits", "9"], "--bits"),
    (["quantize", "{fixture}", "--bits", "four"], "--bits"),
    (["quantize", "{fixture}", "-o", "{fixture}"], "is the input model"),
    (["quantize", "{fixture}", "-o", "nowhere/out.onnx"], "does not exist"),
    (["quantize", "{text}"], "not an ONNX model"),
    (["quantize", "{fixture}", "--val", "{text}"], "not a readable .npz"),
    (["frobnicate"], "No such command"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, fragment):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n" * 10)
    args = [a.format(fixture=FIXTURE, text=text) for a in args]
    before = FIXTURE.read_bytes()
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and FIXTURE.read_bytes() == before


def test_data_of_the_wrong_shape(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 64), np.float32))
    proc = run("quantize", FIXTURE, "--val", bad, "-o", tmp_path / "q.onnx")
    assert proc.returncode != 0 and "expects rank 4" in proc.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_version_and_help():
    assert run("--version").stdout.startswith("inq-onnx, version")
    for command in ("quantize", "inspect"):
        assert "Example" in run(command, "--help").stdout


@pytest.mark.slow
def test_one_shot_pins_reach_verification_and_fidelity(tmp_path):
    from tests.conftest import shared_model
    model = shared_model("silero_vad.onnx")
    chunks = np.random.default_rng(0).uniform(-0.3, 0.3, (8, 576)).astype(np.float32)
    np.savez(tmp_path / "val.npz", input=chunks, state=np.zeros((8, 2, 128), np.float32))
    proc = run("quantize", model, "--bits", "5", "--per-channel", "--pin", "sr=16000", "--val", tmp_path / "val.npz",
               "-o", tmp_path / "q.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "ONNX Runtime ran it on the first samples" in proc.stdout and "'sr': []" in proc.stdout
    assert "fidelity on 8 samples" in proc.stdout


def test_range_rule_is_chosen_reported_and_stamped(tmp_path):
    tables = {}
    for rule in ("paper", "mse"):
        out = tmp_path / f"{rule}.onnx"
        proc = run("quantize", FIXTURE, "--bits", "3", "--range", rule, "-o", out, "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["options"]["range"] == rule
        tables[rule] = {t["name"]: t for t in report["tensors"] if t["quantized"]}
        assert {t["range_rule"] for t in tables[rule].values()} == {rule}
        stamp = {p.key: json.loads(p.value) for p in onnx.load(out).metadata_props if p.key == "inq_onnx.quantized"}
        assert {t["range"] for t in stamp["inq_onnx.quantized"]["tensors"].values()} == {rule}
    for name, t in tables["mse"].items():
        assert t["n1"][1] <= tables["paper"][name]["n1"][1]
        assert t["rel_l2_error"] <= tables["paper"][name]["rel_l2_error"] + 1e-12
    proc = run("quantize", FIXTURE, "--bits", "3", "-o", tmp_path / "auto.onnx")  # auto: mse at 3 bits per tensor
    assert proc.returncode == 0 and "n1 rule" in proc.stdout and " mse " in proc.stdout
    proc = run("quantize", FIXTURE, "--range", "median", "-o", tmp_path / "bad.onnx")
    assert proc.returncode != 0 and "median" in proc.stderr


def test_bias_correction_uses_the_val_samples_and_says_so(tmp_path):
    digits = np.load(FIXTURE.parent / "digits.npz")
    val = tmp_path / "val.npz"
    np.savez(val, input=digits["x_test"].astype(np.float32) / 16.0, labels=digits["y_test"])
    proc = run("quantize", FIXTURE, "--bits", "4", "--val", val, "-o", tmp_path / "on.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "bias correction on 256 samples: 4 layers corrected" in proc.stdout and "(the --val samples)" in proc.stdout
    proc = run("quantize", FIXTURE, "--bits", "4", "--val", val, "--bias-correction", "off", "-o", tmp_path / "off.onnx", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["bias_correction"] is None
    before = {i.name: i for i in onnx.load(tmp_path / "off.onnx").graph.initializer}
    after = {i.name: i for i in onnx.load(tmp_path / "on.onnx").graph.initializer}
    assert before.keys() == after.keys() and any(before[k] != after[k] for k in before if "bias" in k)


def test_bias_correction_by_default_is_kept_only_where_it_lowers_the_output_error(tmp_path):
    digits = np.load(FIXTURE.parent / "digits.npz")
    val = tmp_path / "val.npz"
    np.savez(val, input=digits["x_test"].astype(np.float32) / 16.0, labels=digits["y_test"])
    for args, kept in ((["--bits", "3"], True), (["--bits", "2"], False), (["--bits", "2", "--bias-correction", "on"], True),
                       (["--bits", "2", "--bias-correction", "off"], None)):
        proc = run("quantize", FIXTURE, *args, "--val", val, "-o", tmp_path / "q.onnx", "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)["bias_correction"]
        if kept is None:
            assert report is None, args
            continue
        assert (len(report["corrected"]) == 4) is kept, args
        assert kept or report["error"].startswith("it did not lower the output error on 64 samples"), args
    proc = run("quantize", FIXTURE, "--bits", "2", "--val", val, "-o", tmp_path / "q.onnx")
    assert "bias correction skipped: it did not lower the output error" in proc.stdout
    assert "n1 rules judged by the outputs on 64 samples" in proc.stdout


@pytest.mark.training
def test_full_inq_refuses_an_op_without_gradient_with_a_way_out_that_exists(tmp_path):
    from tests.train.train_helpers import model_from_text, rand

    text = """
<ir_version: 8, opset_import: ["" : 14]>
g (float[N,3,6,6] x) => (float[N,4,6,6] y) { c = Conv <pads = [1,1,1,1]> (x, W)  h = HardSwish (c)  y = CumSum (h, ax) }
"""
    path = tmp_path / "m.onnx"
    onnx.save(model_from_text(text, W=rand(4, 3, 3, 3), ax=np.array(1)), path)
    np.savez(tmp_path / "d.npz", x=rand(8, 3, 6, 6))
    before = path.read_bytes()
    proc = run("quantize", path, "--data", tmp_path / "d.npz", "-o", tmp_path / "q.onnx")
    assert proc.returncode != 0 and path.read_bytes() == before and not (tmp_path / "q.onnx").exists()
    assert proc.stderr.count("\n") == 1 and "exclude" not in proc.stderr
    assert "CumSum: blocks training (no gradient builder)" in proc.stderr
    assert "HardSwish: trains through a rewrite (hardsigmoid_to_minmax)" in proc.stderr
    assert "To fix this, for CumSum, quantize one shot without --data, or run `inq-onnx step`" in proc.stderr


WITHOUT = """
import importlib.abc, importlib.util, sys
from importlib import metadata

missing = sys.argv.pop(1)

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == missing:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

def version(name, real=metadata.version):
    if name.startswith(missing):
        raise metadata.PackageNotFoundError(name)
    return real(name)

metadata.version = version
importlib.util.find_spec = lambda name, *a, real=importlib.util.find_spec: None if name == missing else real(name, *a)
sys.meta_path.insert(0, Missing())
from inq_onnx_cli.main import main  # what the inq-onnx script runs
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("missing, message", [
    ("onnxruntime", "error: inq-onnx needs ONNX Runtime and none is installed. To fix this, pip install 'inq-onnx[runtime]'"),
    ("safetensors", "error: No module named 'safetensors'. To fix this, reinstall inq-onnx with pip"),
])
def test_a_missing_package_is_one_line_saying_what_to_install(tmp_path, missing, message):
    proc = subprocess.run([sys.executable, "-c", WITHOUT, missing, "quantize", str(FIXTURE), "-o", str(tmp_path / "q.onnx")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(message), lines[0]
    assert not any(tmp_path.iterdir())
