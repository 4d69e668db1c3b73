"""A short mutation fuzz (bench/fuzz_mutations.py): broken variants of the shared models and the
fixture through `inq-onnx quantize`; none may end in a traceback, a crash or a timeout."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_MODELS

pytestmark = pytest.mark.slow


def test_hundred_mutants_end_cleanly(tmp_path):
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"{SHARED_MODELS} is absent: the fuzz mutates the project's shared models")
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz_mutations.py"), "--cases", "100", "--seed", "7",
                           "--timeout", "300", "--json", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=1800)
    results = json.loads(out.read_text())
    assert len(results) == 100, proc.stdout + proc.stderr
    bad = [r for r in results if r["kind"] not in ("ok", "clean")]
    assert not bad, proc.stdout
    assert sum(r["kind"] == "clean" for r in results) > 50  # the mutations do break most models
