"""Killed runs: a real retraining run of the fixture, through the CLI in a child process, killed
at exact points and run again, ends with the weights of an uninterrupted run, bit for bit.

The points are reached with the test-only hook ``INQ_ONNX_TEST_PAUSE_AT`` (inq_onnx/train/pause.py):
the run stops itself there (SIGSTOP) and the test kills its whole process group with SIGKILL, as
a power loss or the OOM killer would, or sends it Ctrl-C (SIGINT). After every kill nothing is
lost: no output file, ``CURRENT`` names a complete checkpoint, and the next run resumes from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file

from inq_onnx.train.checkpoint import CURRENT, load_checkpoint
from inq_onnx.train.run_log import read_log
from inq_onnx.train.pause import ENV
from tests.conftest import FIXTURE

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="stops processes with SIGSTOP, finds them in /proc")

SETTINGS = ["--bits", "4", "--schedule", "0.5,0.8,1", "--epochs-per-step", "2", "--batch-size", "64"]
EVERY_BATCH = ["--checkpoint-minutes", "0"]  # does not change the results, so the reference holds
RESUMED = "resuming the run from its checkpoint"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = np.load(FIXTURE.parent / "digits.npz")
    path = tmp_path_factory.mktemp("data") / "train.npz"
    np.savez(path, input=(d["x_train"] / 16).astype(np.float32), labels=d["y_train"])
    return path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """Weights and masks of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out.onnx"
    done = run(command(data, out))
    assert done.returncode == 0, done.stderr
    return results(out)


def command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "inq_onnx_cli.main", "quantize", str(FIXTURE), *SETTINGS, "--data", str(data),
            "-o", str(out), *extra]


def environment(pause: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    return {**env, ENV: pause} if pause else env


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=environment())


def start_paused(cmd: list[str], pause: str) -> subprocess.Popen:
    """Start ``cmd`` in its own process group and wait until one of its processes stops at ``pause``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(pause),
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not stopped_in_group(proc.pid):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before reaching {pause}: {proc.stderr.read()[-500:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run did not reach {pause}")
        time.sleep(0.02)
    return proc


def stopped_in_group(group: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "T" and int(fields[2]) == group:
                return True
    return False


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def results(out: Path) -> dict:
    model = onnx.load(str(out))
    weights = {t.name: t.raw_data for t in model.graph.initializer}
    assert all(weights.values())
    return {"weights": weights, "masks": load_file(str(out.with_suffix(".inq.safetensors")))}


def run_dir(out: Path) -> Path:
    return out.with_name(out.name + ".inq-run")


def check_nothing_lost(out: Path) -> None:
    """After a kill: no output (complete or partial), and CURRENT, if any, names a complete checkpoint."""
    assert not out.exists() and not out.with_suffix(".inq.safetensors").exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    if (run_dir(out) / CURRENT).exists():
        assert load_checkpoint(run_dir(out)) is not None  # model, sidecar, optimizer and progress all read


def check_finished(out: Path, reference: dict) -> None:
    """The same weights and masks as the uninterrupted run, and a tidy run folder."""
    got = results(out)
    assert got["weights"].keys() == reference["weights"].keys()
    for name, raw in reference["weights"].items():
        assert got["weights"][name] == raw, f"{name} differs from the uninterrupted run"
    for name, mask in reference["masks"].items():
        np.testing.assert_array_equal(got["masks"][name], mask)
    folder = run_dir(out)
    current = (folder / CURRENT).read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted([CURRENT, "artifacts", current, "log.jsonl"])
    assert not [p.name for p in (folder / "artifacts").iterdir() if p.name.startswith(".")]  # no killed build's work
    assert [r["step"] for r in read_log(folder)] == [-1, 0, 1, 2]  # -1: float and one-shot figures


def kill_and_resume(data: Path, out: Path, reference: dict, pauses: list[str], extra: list[str]) -> str:
    """Kill the run at each pause in turn, then run it to the end; the last run's stderr."""
    for pause in pauses:
        kill(start_paused(command(data, out, *extra), pause))
        check_nothing_lost(out)
    done = run(command(data, out, *extra))
    assert done.returncode == 0, done.stderr
    check_finished(out, reference)
    return done.stderr


def test_killed_mid_epoch_resumes_to_identical_weights(data, reference, tmp_path):
    out = tmp_path / "out.onnx"
    proc = start_paused(command(data, out, *EVERY_BATCH), "batch:30")  # step 1, epoch 2
    kill(proc)
    check_nothing_lost(out)
    ckpt = load_checkpoint(run_dir(out))
    assert ckpt.sidecar.step == 0 and not ckpt.progress.trained and ckpt.progress.epoch == 1
    assert ckpt.optimizer is not None
    done = run(command(data, out, *EVERY_BATCH))
    assert done.returncode == 0, done.stderr
    assert f"{RESUMED} in step 1, epoch 2" in done.stderr
    check_finished(out, reference)
    train_loss = {r["step"]: r["train_loss"] for r in read_log(run_dir(out))}
    assert train_loss[0] > 0  # the mean over the whole step, batches before the kill included


@pytest.mark.slow
@pytest.mark.parametrize("pauses, extra, resumed", [
    (["batch:60"], [], "after step 1"),  # mid-step without a checkpoint in it: redo the step
    (["checkpoint-write:5"], EVERY_BATCH, "in step 1, epoch 1, batch 5"),  # 5th save half written
    (["checkpoint-commit:5"], EVERY_BATCH, "in step 1, epoch 1, batch 5"),  # renamed, CURRENT not yet
    (["checkpoint-write:1"], [], None),  # the first step's checkpoint half written: start over
    (["record:3"], [], "after step 1"),  # step 2 logged (record 1: float), its checkpoint not written: logged twice
    (["batch:60", "artifacts"], [], "after step 1"),  # then killed while the resumed run builds artifacts
    (["batch:30", "checkpoint-write:2", "checkpoint-commit:3", "batch:40"], EVERY_BATCH, "in step 2"),
], ids=["mid-step", "checkpoint-write", "checkpoint-commit", "first-checkpoint", "after-record", "artifacts", "chain"])
def test_killed_run_resumes_to_identical_weights(data, reference, tmp_path, pauses, extra, resumed):
    out = tmp_path / "out.onnx"
    stderr = kill_and_resume(data, out, reference, pauses, extra)
    if resumed is None:
        assert RESUMED not in stderr
    else:
        assert RESUMED in stderr and resumed in stderr


@pytest.mark.slow
def test_killed_during_artifact_generation_starts_over(data, reference, tmp_path):
    out = tmp_path / "out.onnx"
    kill(start_paused(command(data, out), "artifacts"))
    check_nothing_lost(out)
    assert not (run_dir(out) / CURRENT).exists()
    done = run(command(data, out))
    assert done.returncode == 0 and RESUMED not in done.stderr, done.stderr
    check_finished(out, reference)


@pytest.fixture
def ctrl_c_reaches_the_run():
    """Start the runs as a terminal starts a foreground command, with SIGINT at its default.

    A shell without job control starts a background job (`make test &`, some CI runners) with
    SIGINT ignored, children inherit that, and Python keeps an inherited SIG_IGN: the run would
    then rightly never see the test's Ctrl-C and finish with exit 0. A Python handler is reset
    to the default in a child at exec, so setting one here is enough."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:] and "Traceback" not in stderr, stderr
    return errors[0]


def test_ctrl_c_writes_a_checkpoint_exits_130_and_resumes(data, reference, tmp_path, ctrl_c_reaches_the_run):
    out = tmp_path / "out.onnx"
    proc = start_paused(command(data, out), "batch:30")  # no timed checkpoint in step 1 before Ctrl-C
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    message = one_error_line(stderr)
    assert "interrupted in step 1" in message and "a checkpoint was written to" in message
    assert message.endswith("run the same command again to resume from it")
    check_nothing_lost(out)
    ckpt = load_checkpoint(run_dir(out))
    assert ckpt.sidecar.step == 0 and not ckpt.progress.trained and ckpt.optimizer is not None
    done = run(command(data, out))
    assert done.returncode == 0 and f"{RESUMED} in step 1, epoch 2" in done.stderr, done.stderr
    check_finished(out, reference)


def test_ctrl_c_before_the_first_checkpoint_is_one_line(data, tmp_path, ctrl_c_reaches_the_run):
    out = tmp_path / "out.onnx"
    proc = start_paused(command(data, out), "artifacts")  # the artifacts child is stopped
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    os.killpg(proc.pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert one_error_line(stderr) == ("error: interrupted before the first checkpoint. "
                                      "To fix this, run the same command again to start")
    check_nothing_lost(out)
