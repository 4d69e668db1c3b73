"""Bad input, one table: every mistake a user can make is one line on stderr, nothing is lost.

Each case builds its files under ``tmp/in`` (the model is a copy of the fixture unless the case
says otherwise), runs the command as a user would (a subprocess, cwd ``tmp``, outputs aimed at
``tmp/out``) and checks: a non-zero exit, exactly one stderr line that starts with ``error:``,
names the problem (the fragment) and says how to fix it, no traceback, and every file under
``tmp`` byte-identical afterwards, with nothing added (no partial output, no temporary file, no
run folder).

Root ignores file permissions, so "an output folder that is not writable" is played by an
output whose parent is a regular file (what a chmod'ed folder does for other users is the same
check in ``graph/io.check_writable_target``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import helper

from inq_onnx import quantize
from inq_onnx.graph.io import runtime_limits
from inq_onnx.incremental import InqOptions, start
from inq_onnx.jobs import step_file
from inq_onnx.options import QuantizeOptions
from inq_onnx.sidecar import write_sidecar
from inq_onnx.train.ort_training import training_available
from tests.conftest import FIXTURE, conv_gemm_model

CLI = [sys.executable, "-m", "inq_onnx_cli.main"]
NEWEST = runtime_limits()
NO_TRAINING = "retraining needs ONNX Runtime's training build"  # what --data says first without it
DIGITS = FIXTURE.parent / "digits.npz"
FIX_HINTS = ("To fix this",)
N_SAMPLES = 40


# ---- builders: each writes into tmp/in (the fixture copy is in/model.onnx) --------------------

def fixture_model(d: Path) -> None:
    shutil.copy(FIXTURE, d / "model.onnx")


def write_model(d: Path, model: onnx.ModelProto, name: str = "model.onnx") -> None:
    (d / name).write_bytes(model.SerializeToString())


def edited_fixture(edit: Callable[[onnx.ModelProto], None]) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        model = onnx.load(str(FIXTURE))
        edit(model)
        write_model(d, model)
    return build


def digits(n: int = N_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS) as archive:
        return archive["x_train"][:n].astype(np.float32) / 16.0, archive["y_train"][:n]


def with_data(**arrays: Callable[[], np.ndarray]) -> Callable[[Path], None]:
    """The fixture plus in/data.npz holding the given arrays (callables, built lazily)."""
    def build(d: Path) -> None:
        fixture_model(d)
        np.savez(d / "data.npz", **{k: make() for k, make in arrays.items()})
    return build


def good_x() -> np.ndarray:
    return digits()[0]


def good_y() -> np.ndarray:
    return digits()[1]


def also(*builders: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        for b in builders:
            b(d)
    return build


def sidecar_of(model: onnx.ModelProto, bits: int = 4) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        write_sidecar(d / "side.inq.safetensors", start(model, InqOptions(QuantizeOptions(bits=bits))))
    return build


def corrupted_sidecar(d: Path) -> None:
    sidecar_of(onnx.load(str(FIXTURE)))(d)
    raw = bytearray((d / "side.inq.safetensors").read_bytes())
    raw[8:24] = b"\xff" * 16  # the JSON header is garbage now
    (d / "side.inq.safetensors").write_bytes(bytes(raw))


def external_model(location: str | None = None, keep_data: bool = True) -> Callable[[Path], None]:
    """conv_gemm_model with external data beside it, optionally pointing elsewhere or missing."""
    def build(d: Path) -> None:
        onnx.save_model(conv_gemm_model(), str(d / "model.onnx"), save_as_external_data=True,
                        location="model.onnx.data", size_threshold=0)
        if location is not None:
            model = onnx.load(str(d / "model.onnx"), load_external_data=False)
            for t in model.graph.initializer:
                for entry in t.external_data:
                    if entry.key == "location":
                        entry.value = location
            write_model(d, model)
            shutil.move(d / "model.onnx.data", d.parent / "secret.data")
        elif not keep_data:
            (d / "model.onnx.data").unlink()
    return build


def newer_ir_used(model: onnx.ModelProto) -> None:
    """One IR version past what ONNX Runtime loads, and a FLOAT4E2M1 tensor (IR 11): not lowerable."""
    model.ir_version = NEWEST.ir_version + 1
    model.graph.initializer.append(onnx.TensorProto(name="fp4", data_type=23, dims=[2], raw_data=b"\x21"))


def opset(v: int) -> Callable[[onnx.ModelProto], None]:
    return lambda m: m.opset_import[0].__setattr__("version", v)


def dangling_input(m: onnx.ModelProto) -> None:
    m.graph.node[1].input[0] = "nowhere"


def parent_is_a_file(d: Path) -> None:
    fixture_model(d)
    (d.parent / "out" / "blocker").write_text("a file, not a folder\n")


def quantized_fixture(stamp: str | None = None) -> Callable[[Path], None]:
    """in/q.onnx: the fixture quantized to 4 bits (its 'inq_onnx.quantized' stamp replaced if given)."""
    def build(d: Path) -> None:
        model = quantize(str(FIXTURE), bits=4).model
        for prop in model.metadata_props:
            if stamp is not None and prop.key == "inq_onnx.quantized":
                prop.value = stamp
        write_model(d, model, "q.onnx")
    return build


def retrained_off_mask(d: Path) -> None:
    """in/step1.onnx + its sidecar, then the frozen weights of conv1 moved (not retrained with the mask)."""
    fixture_model(d)
    step_file(d / "model.onnx", d / "step1.onnx", InqOptions(QuantizeOptions(bits=4)))
    model = onnx.load(str(d / "step1.onnx"))
    w = next(t for t in model.graph.initializer if t.name == "conv1.weight")
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(1.01), w.name))
    write_model(d, model, "step1.onnx")


def weight_data_short(m: onnx.ModelProto) -> None:
    w = next(t for t in m.graph.initializer if t.name == "fc1.weight")
    w.raw_data = w.raw_data[:-4]


# ---- the table --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], None]
    argv: tuple[str, ...]  # {in}: tmp/in, {out}: tmp/out
    fragment: str


Q = ("quantize", "{in}/model.onnx")
OUT = ("-o", "{out}/q.onnx")
TRAIN = ("--data", "{in}/data.npz", "--epochs-per-step", "1")

CASES = [
    Case("missing-file", lambda d: None, ("quantize", "{in}/missing.onnx", *OUT), "does not exist"),
    Case("a-directory", lambda d: (d / "model.onnx").mkdir(), (*Q, *OUT), "is a directory"),
    Case("empty-file", lambda d: (d / "model.onnx").write_bytes(b""), (*Q, *OUT), "is empty"),
    Case("text-file", lambda d: (d / "model.onnx").write_text("not a model\n" * 50), (*Q, *OUT), "not an ONNX model"),
    Case("truncated", lambda d: (d / "model.onnx").write_bytes(FIXTURE.read_bytes()[:20000]), (*Q, *OUT),
         "not an ONNX model"),
    Case("protobuf-not-a-model",
         lambda d: (d / "model.onnx").write_bytes(onnx.numpy_helper.from_array(np.ones((3, 4), np.float32)).SerializeToString()),
         (*Q, *OUT), "not an ONNX model"),
    Case("graph-not-a-model", lambda d: (d / "model.onnx").write_bytes(onnx.load(str(FIXTURE)).graph.SerializeToString()),
         (*Q, *OUT), "not an ONNX model"),
    Case("fails-checker", edited_fixture(dangling_input), (*Q, *OUT), "fails onnx.checker"),
    Case("weight-data-short", edited_fixture(weight_data_short), (*Q, *OUT), "tensor 'fc1.weight' holds"),
    # one past what the installed ONNX Runtime loads (1.19.2: IR 10, opset 21), both versions named
    Case("ir-version-too-new", edited_fixture(newer_ir_used), (*Q, *OUT),
         f"IR version {NEWEST.ir_version + 1}; the installed ONNX Runtime {NEWEST.version} loads at most "
         f"IR version {NEWEST.ir_version}"),
    Case("opset-too-new", edited_fixture(opset(NEWEST.opset + 1)), (*Q, *OUT),
         f"opset {NEWEST.opset + 1}; the installed ONNX Runtime {NEWEST.version} supports at most opset {NEWEST.opset}"),
    Case("inspect-truncated", lambda d: (d / "model.onnx").write_bytes(FIXTURE.read_bytes()[:333]),
         ("inspect", "{in}/model.onnx"), "not an ONNX model"),
    Case("bits-0", fixture_model, (*Q, *OUT, "--bits", "0"), "--bits"),
    Case("bits-1", fixture_model, (*Q, *OUT, "--bits", "1"), "--bits"),
    Case("bits-9", fixture_model, (*Q, *OUT, "--bits", "9"), "--bits"),
    Case("bits-minus-3", fixture_model, (*Q, *OUT, "--bits", "-3"), "--bits"),
    Case("bits-four", fixture_model, (*Q, *OUT, "--bits", "four"), "--bits"),
    Case("step-bits-9", fixture_model, ("step", "{in}/model.onnx", *OUT, "--bits", "9"), "--bits"),
    Case("schedule-not-increasing", with_data(input=good_x, labels=good_y),
         (*Q, *OUT, *TRAIN, "--schedule", "0.5,0.3,1"), "not strictly increasing"),
    Case("schedule-not-ending-at-1", with_data(input=good_x, labels=good_y),
         (*Q, *OUT, *TRAIN, "--schedule", "0.5,0.9"), "not 1"),
    Case("schedule-not-a-number", with_data(input=good_x, labels=good_y),
         (*Q, *OUT, *TRAIN, "--schedule", "0.5,half,1"), "not a number"),
    Case("step-schedule-above-1", fixture_model, ("step", "{in}/model.onnx", *OUT, "--schedule", "0.5,1.5"),
         "outside (0, 1]"),
    Case("data-missing", fixture_model, (*Q, *OUT, "--data", "{in}/nothing.npz"), "does not exist"),
    Case("data-not-npz", also(fixture_model, lambda d: (d / "data.npz").write_text("1,2,3\n")), (*Q, *OUT, *TRAIN),
         "not a readable .npz"),
    Case("data-missing-an-input", with_data(image=good_x, labels=good_y), (*Q, *OUT, *TRAIN),
         "no array for model input 'input'"),
    Case("data-wrong-shape", with_data(input=lambda: good_x().reshape(N_SAMPLES, 64), labels=good_y), (*Q, *OUT, *TRAIN),
         "expects rank 4"),
    Case("data-wrong-size", with_data(input=lambda: np.zeros((N_SAMPLES, 1, 7, 7), np.float32)), (*Q, *OUT, *TRAIN),
         "the model expects [?, 1, 8, 8]"),
    Case("data-strings", with_data(input=lambda: np.full((N_SAMPLES, 1, 8, 8), "0.5")), (*Q, *OUT, *TRAIN),
         "the model expects float32"),
    Case("data-complex", with_data(input=lambda: good_x().astype(np.complex64)), (*Q, *OUT, *TRAIN),
         "the model expects float32"),
    Case("data-object-array", with_data(input=lambda: np.array([None] * N_SAMPLES, dtype=object)), (*Q, *OUT, *TRAIN),
         "not a readable .npz"),
    Case("val-wrong-shape", with_data(input=lambda: good_x()[:, :, :4]), (*Q, *OUT, "--val", "{in}/data.npz"),
         "the model expects [?, 1, 8, 8]"),
    Case("labels-out-of-range", with_data(input=good_x, labels=lambda: np.full(N_SAMPLES, 12)), (*Q, *OUT, *TRAIN),
         "outside 0..9 (the model has 10 classes)"),
    Case("labels-negative", with_data(input=good_x, labels=lambda: -good_y() - 1), (*Q, *OUT, *TRAIN),
         "outside 0..9 (the model has 10 classes)"),
    Case("val-labels-out-of-range", with_data(input=good_x, labels=lambda: good_y() + 10), (*Q, *OUT, "--val", "{in}/data.npz"),
         "outside 0..9 (the model has 10 classes)"),
    Case("labels-float", with_data(input=good_x, labels=lambda: good_y().astype(np.float32)), (*Q, *OUT, *TRAIN),
         "1-D integer array"),
    Case("labels-count", with_data(input=good_x, labels=lambda: good_y()[:7]), (*Q, *OUT, *TRAIN), "7 labels for 40 samples"),
    Case("sidecar-other-model", also(fixture_model, sidecar_of(conv_gemm_model())),
         ("step", "{in}/model.onnx", "--sidecar", "{in}/side.inq.safetensors", *OUT), "belongs to another model"),
    Case("sidecar-other-bits", also(fixture_model, sidecar_of(onnx.load(str(FIXTURE)), bits=5)),
         ("step", "{in}/model.onnx", "--bits", "4", "--sidecar", "{in}/side.inq.safetensors", *OUT), "made for 5 bits"),
    Case("sidecar-corrupted", also(fixture_model, corrupted_sidecar),
         ("step", "{in}/model.onnx", "--sidecar", "{in}/side.inq.safetensors", *OUT), "not a readable safetensors"),
    Case("sidecar-missing", fixture_model, ("step", "{in}/model.onnx", "--sidecar", "{in}/nope.inq.safetensors", *OUT),
         "does not exist"),
    Case("output-folder-missing", fixture_model, (*Q, "-o", "{out}/nowhere/q.onnx"), "does not exist"),
    Case("output-parent-is-a-file", parent_is_a_file, (*Q, "-o", "{out}/blocker/q.onnx"), "is a file, not a folder"),
    Case("output-is-a-directory", fixture_model, (*Q, "-o", "{out}"), "is a directory"),
    Case("output-is-the-input", fixture_model, (*Q, "-o", "{in}/model.onnx"), "is the input model"),
    Case("step-output-is-the-input", fixture_model, ("step", "{in}/model.onnx", "-o", "{in}/model.onnx"),
         "is the input model"),
    Case("external-data-missing", external_model(keep_data=False), (*Q, *OUT), "is missing"),
    Case("external-data-outside", external_model(location="../secret.data"), (*Q, *OUT), "outside the model's folder"),
    Case("external-data-absolute", external_model(location="/etc/passwd"), (*Q, *OUT), "outside the model's folder"),
    Case("partition-sideways", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--partition", "sideways"),
         "'sideways' is not one of"),
    Case("pin-malformed", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--pin", "sr"),
         "is not INPUT=NUMBER"),
    Case("pin-unknown-input", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--pin", "sr=16000"),
         "not an input of the model"),
    Case("loss-output-unknown", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--loss-output", "probs"),
         "loss output 'probs'"),
    Case("distill-tensor-unknown", with_data(input=good_x), (*Q, *OUT, *TRAIN, "--distill-tensors", "nope"),
         "distillation tensors ['nope'] are not computed"),
    Case("class-axis-out-of-range", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--class-axis", "5"),
         "class axis 5 is out of range"),
    Case("lr-negative", with_data(input=good_x, labels=good_y), (*Q, *OUT, *TRAIN, "--lr", "-1"), "learning rate"),
    Case("step-frozen-weights-moved", retrained_off_mask, ("step", "{in}/step1.onnx", *OUT), "left their codebook"),
    Case("export-not-quantized", fixture_model, ("export", "{in}/model.onnx", *OUT), "no 'inq_onnx.quantized' metadata"),
    Case("export-stamp-malformed", quantized_fixture("not json"), ("export", "{in}/q.onnx", *OUT), "metadata is malformed"),
    Case("export-output-is-the-input", quantized_fixture(), ("export", "{in}/q.onnx", "-o", "{in}/q.onnx"),
         "is the input model"),
    Case("export-format-sideways", quantized_fixture(), ("export", "{in}/q.onnx", *OUT, "--format", "sideways"),
         "'sideways' is not one of"),
    Case("report-not-a-run", lambda d: None, ("report", "{in}"), "holds no run log"),
    Case("unknown-command", lambda d: None, ("frobnicate",), "No such command"),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes ("dir" for folders)."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


@dataclass
class Outcome:
    root: Path
    before: dict[str, str]
    proc: subprocess.CompletedProcess


def prepare(case: Case, root: Path) -> tuple[list[str], dict[str, str]]:
    (root / "in").mkdir()
    (root / "out").mkdir()
    case.build(root / "in")
    argv = [a.format(**{"in": root / "in", "out": root / "out"}) for a in case.argv]
    return argv, snapshot(root)


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + argv, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case run once, a few at a time (each command is mostly interpreter start-up)."""
    prepared = {}
    for case in CASES:
        root = tmp_path_factory.mktemp(case.id)
        prepared[case.id] = (root, *prepare(case, root))
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        procs = {cid: pool.submit(run_cli, argv, root) for cid, (root, argv, _) in prepared.items()}
        return {cid: Outcome(root, before, procs[cid].result()) for cid, (root, _, before) in prepared.items()}


def test_the_table_is_big_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_nothing_is_lost(outcomes, case):
    outcome = outcomes[case.id]
    proc = outcome.proc
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, 3), proc.stderr  # 3: an internal error (a bug of ours)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    if "--data" in case.argv and not training_available():  # option errors still come first
        assert case.fragment in lines[0] or NO_TRAINING in lines[0], lines[0]
    else:
        assert case.fragment in lines[0], lines[0]
    assert any(hint in lines[0] for hint in FIX_HINTS), lines[0]
    assert snapshot(outcome.root) == outcome.before  # inputs untouched, no output, no temporary, no run folder
