"""`inq-onnx export` and `quantize --compact` as a user runs them."""

import json
import subprocess
import sys

import numpy as np
import onnx

from inq_onnx.runtime import session
from tests.conftest import FIXTURE

CLI = [sys.executable, "-m", "inq_onnx_cli.main"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def outputs(path, x):
    return session(str(path)).run(None, {"input": x})[0]


def test_compact_float_and_codes_exports(tmp_path):
    q = tmp_path / "q.onnx"
    assert run("quantize", FIXTURE, "--bits", "4", "-o", q, "-q").returncode == 0
    compact, back, codes = tmp_path / "q.c4.onnx", tmp_path / "q.f32.onnx", tmp_path / "q.codes"
    for fmt, out in (("compact", compact), ("codes", codes)):
        proc = run("export", q, "--format", fmt, "-o", out)
        assert proc.returncode == 0, proc.stderr
    assert run("export", compact, "--format", "float", "-o", back).returncode == 0
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(outputs(q, x), outputs(compact, x))
    assert compact.stat().st_size < q.stat().st_size / 4
    quantized = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(q)).graph.initializer}
    for init in onnx.load(str(back)).graph.initializer:
        assert np.array_equal(onnx.numpy_helper.to_array(init), quantized[init.name])
    manifest = json.loads((codes / "manifest.json").read_text())
    assert "sign(c)" in manifest["decode"]


def test_quantize_compact_writes_the_compact_form(tmp_path):
    out = tmp_path / "c.onnx"
    proc = run("quantize", FIXTURE, "--bits", "3", "--compact", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size < FIXTURE.stat().st_size / 4
    assert any(f.domain == "inq_onnx" for f in onnx.load(str(out)).functions)


def test_exporting_a_float_model_is_a_clear_error(tmp_path):
    proc = run("export", FIXTURE, "-o", tmp_path / "x.onnx")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "quantize it first" in proc.stderr and not (tmp_path / "x.onnx").exists()
