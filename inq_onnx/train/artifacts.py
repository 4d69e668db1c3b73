"""Build ORT training artifacts (training, eval and optimizer models + checkpoint).

``generate_artifacts`` runs in a child process: on some graphs it aborts the process
(SIGABRT on If, SIGSEGV), and its INFO lines ignore log severity. The child's output is
captured and shown only inside the TrainingError raised when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnx

import inq_onnx
from inq_onnx.errors import InvalidOptionError, TrainingError
from inq_onnx.graph.readers import for_runtime
from inq_onnx.train.losses import KL_SOFTMAX_OPSET, LossSpec, ResolvedLoss, resolve_loss
from inq_onnx.train.ort_training import require_training
from inq_onnx.train.rewrites.gradient_support import (
    NO_REWRITE_WAY_OUT, blocking, gradient_path_ops, gradient_report,
)
from inq_onnx.train.rewrites.opset_raise import raise_opset

WORK_PREFIX = ".work-"
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class TrainingArtifacts:
    """Paths of generated artifacts, and what a training step feeds."""

    folder: Path
    training_model: Path
    eval_model: Path
    optimizer_model: Path
    checkpoint: Path
    loss: ResolvedLoss
    trainable: tuple[str, ...]
    inputs: tuple[str, ...]
    """Inputs of a step, in order: the model's own, then the loss's labels/target/teacher."""


def check_trainable(model: onnx.ModelProto, trainable: Sequence[str]) -> tuple[str, ...]:
    """``trainable`` as a tuple, if each is a float top-level initializer (and there is one)."""
    floats = {t.name for t in model.graph.initializer if t.data_type in _FLOATS}
    bad = sorted(set(trainable) - floats)
    if not trainable or bad:
        problem = f"not float initializers of the main graph: {bad[:5]}" if bad else "no trainable tensor given"
        raise InvalidOptionError(
            f"cannot train {problem}",
            "name float initializers (run prepare_for_training first to turn Constant weights into initializers)",
        )
    return tuple(dict.fromkeys(trainable))


def _telling_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("INFO:", "WARNING:", "Traceback", "File ", "^"))]
    line = next((ln for ln in reversed(lines) if "Assertion" in ln or "was false" in ln), lines[-1] if lines else "")
    if "was false." in line:
        before, after = line.split("was false.", 1)
        words = before.split()
        while words and (words[0].endswith(":") or "/" in words[0]):  # "RuntimeError:", "/src/x.h:12"
            words.pop(0)
        return after.strip() or f"{' '.join(words)} was false"
    return line[line.index("Assertion"):] if "Assertion" in line else line


def failure_reason(returncode: int, output: str, error: str | None = None) -> str:
    """One line: the signal (if any) and the most telling line of the error or child output."""
    if error:
        return _telling_line(error)
    telling = _telling_line(output)
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signum in signal.valid_signals():
        return f"{signal.Signals(signum).name}: {telling}" if telling else signal.Signals(signum).name
    return telling or f"exit status {returncode}"


def _run_child(config: dict, work: Path, timeout_s: float) -> tuple[dict, str]:
    """The child's result, or ``{"ok": False}`` and the one-line reason it failed."""
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    env = dict(os.environ)
    root = str(Path(inq_onnx.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "inq_onnx.train._artifacts_child", str(config_path)]
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise TrainingError(f"building training artifacts took over {timeout_s:.0f} s", "raise timeout_s") from error
    result_path = Path(config["result"])
    result = json.loads(result_path.read_text()) if result_path.exists() else {"ok": False}
    if done.returncode != 0 or not result.get("ok"):
        return {"ok": False}, failure_reason(done.returncode, done.stderr + "\n" + done.stdout, result.get("error"))
    return result, ""


def _raise_failure(model: onnx.ModelProto, reason: str) -> None:
    stuck = blocking(gradient_report(model, model))  # the model ORT got: its rewrites are done
    if stuck:
        found = "; ".join(entry.describe(way_out=False) for entry in stuck)
        raise TrainingError(f"ONNX Runtime could not build the training graph ({reason}); ops on the gradient path "
                            f"ORT cannot train: {', '.join(e.op for e in stuck)} ({found})",
                            "; ".join(f"for {entry.op}, {entry.way_out}" for entry in stuck))
    ops = ", ".join(gradient_path_ops(model))
    raise TrainingError(
        f"ONNX Runtime could not build the training graph ({reason}); no op on its gradient path ({ops}) is "
        "known to block training",
        f"{NO_REWRITE_WAY_OUT}; and report the model, so that the op gets a rewrite",
    )


def build_artifacts(
    model: onnx.ModelProto,
    *,
    trainable: Sequence[str],
    folder: str | os.PathLike,
    loss: LossSpec = LossSpec(),
    timeout_s: float = 600.0,
) -> TrainingArtifacts:
    """Generate artifacts for ``model`` into ``folder`` (created), with ``trainable`` learning.

    The loss reads ``loss.output`` and every ``loss.distill`` tensor (graph outputs or
    intermediate tensors of ``model``). A KL loss that needs opset 13 raises the opset of
    ``model`` (the training copy) first.

    The optimizer model is AdamW; inq-onnx's own loop may ignore it and only read gradients.
    """
    require_training()
    model = for_runtime(model)  # the training build reads IR 10: a newer copy is lowered when it can be
    names = check_trainable(model, trainable)
    resolved = resolve_loss(model, loss)
    if resolved.needs_opset_raise:  # the copy ORT trains is ours to convert; the user's graph is not touched
        model = raise_opset(model, KL_SOFTMAX_OPSET, "KL over one axis of a rank > 2 output").model
        resolved = resolve_loss(model, loss)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{WORK_PREFIX}*"):  # the work folder of a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=folder) as tmp:  # not /tmp: a kill leaves it here
        work = Path(tmp)
        onnx.save(model, work / "model.onnx")
        config = {
            "model": str(work / "model.onnx"), "folder": str(folder), "trainable": list(names),
            "loss": resolved.to_json(), "result": str(work / "result.json"),
        }
        result, reason = _run_child(config, work, timeout_s)
    if not result["ok"]:
        _raise_failure(model, reason)
    return TrainingArtifacts(
        folder=folder,
        training_model=folder / "training_model.onnx",
        eval_model=folder / "eval_model.onnx",
        optimizer_model=folder / "optimizer_model.onnx",
        checkpoint=folder / "checkpoint",
        loss=resolved,
        trainable=names,
        inputs=tuple(result["inputs"]),
    )
