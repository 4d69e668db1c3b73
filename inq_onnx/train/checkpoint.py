"""Checkpoints of a retraining run, written so that a kill at any instant loses nothing.

A run folder holds numbered checkpoint folders and a ``CURRENT`` file naming the newest
complete one. A checkpoint is written into a temporary folder (``.ckpt-*``), synced, renamed
into place, and only then named in ``CURRENT`` (by an atomic replace): a kill at any instant
leaves ``CURRENT`` naming a complete checkpoint. What a kill leaves behind (a temporary folder,
a checkpoint not yet named) is removed by the next save. Each checkpoint holds the model
(current weights), the mask sidecar, the optimizer state and the progress.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from safetensors.numpy import load_file, save_file

from inq_onnx.errors import SidecarError
from inq_onnx.graph.io import save_model
from inq_onnx.sidecar import Sidecar, read_sidecar, write_sidecar
from inq_onnx.train.pause import pause_point

CURRENT = "CURRENT"
FORMAT = 1
TEMP_PREFIX = ".ckpt-"


@dataclass(frozen=True)
class Progress:
    """Where a run stands: ``sidecar.step`` was partitioned; its retraining has reached
    ``epoch``/``batch`` (the next batch to run) of ``branch`` (the training copy, one per
    pinned combination, in progress) and is finished when ``trained`` is true."""

    trained: bool
    epoch: int = 0
    batch: int = 0
    options: dict | None = None  # the run's options, to refuse a resume with other ones
    loss_sum: float = 0.0  # training losses of the step so far, so that a resumed step logs its mean
    loss_count: int = 0
    branch: int = 0  # index of the branch being retrained; the ones before it are done
    branch_losses: tuple = ()  # (loss sum, batch count) of each finished branch of the step
    lr: float | None = None  # the run's learning rate, once searched (or lowered by the step guard)
    optimizer: str | None = None  # ... and the optimizer it is for (lr_search.SGD or ADAMW)
    guard: dict | None = None  # the step guard's state within a step (lr_search.GuardState.as_dict())
    branch_entries: tuple = ()  # what each finished branch of the step logs (its rate, tries, search)

    def carried(self, trained: bool = False, **fields) -> "Progress":
        """A fresh Progress (a new step, branch or try) that keeps the run's options and rate
        unless ``fields`` says otherwise."""
        return Progress(trained, **{"options": self.options, "lr": self.lr, "optimizer": self.optimizer, **fields})


@dataclass(frozen=True)
class Checkpoint:
    model: onnx.ModelProto
    sidecar: Sidecar
    progress: Progress
    optimizer: dict[str, np.ndarray | float] | None
    arrays: dict[str, np.ndarray] | None = None  # within a step: its start, for the guard's rollback


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    number = latest_number(run_dir) + 1  # above any leftover: a number is never reused
    remove_leftovers(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=run_dir))
    save_model(checkpoint.model, tmp / "model.onnx", external_data=checkpoint.model.ByteSize() > 2**30)
    pause_point("checkpoint-write")
    write_sidecar(tmp / "model.inq.safetensors", checkpoint.sidecar)
    if checkpoint.optimizer is not None:
        arrays = {k: v for k, v in checkpoint.optimizer.items() if isinstance(v, np.ndarray)}
        floats = {k: repr(float(v)) for k, v in checkpoint.optimizer.items() if not isinstance(v, np.ndarray)}
        save_file(arrays, str(tmp / "optimizer.safetensors"), metadata=floats)
    if checkpoint.arrays:
        save_file(dict(checkpoint.arrays), str(tmp / "step.safetensors"))
    (tmp / "progress.json").write_text(json.dumps({"format": FORMAT, **asdict(checkpoint.progress)}))
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    final = run_dir / f"ckpt-{number:06d}"
    os.replace(tmp, final)
    fsync_dir(run_dir)  # the folder is in place before CURRENT names it
    pause_point("checkpoint-commit")
    pointer = run_dir / f".{CURRENT}.tmp"
    pointer.write_text(final.name)
    fsync_file(pointer)
    os.replace(pointer, run_dir / CURRENT)
    fsync_dir(run_dir)
    for old in run_dir.glob("ckpt-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def remove_leftovers(run_dir: Path) -> None:
    """Temporary folders of a save that was killed, and checkpoints ``CURRENT`` does not name."""
    pointer = run_dir / CURRENT
    current = pointer.read_text().strip() if pointer.is_file() else None
    for path in run_dir.iterdir():
        if path.is_dir() and (path.name.startswith(TEMP_PREFIX) or (is_checkpoint(path) and path.name != current)):
            shutil.rmtree(path, ignore_errors=True)


def is_checkpoint(path: Path) -> bool:
    return path.name.startswith("ckpt-") and path.name[5:].isdigit()


def latest_number(run_dir: Path) -> int:
    return max((int(p.name[5:]) for p in run_dir.iterdir() if is_checkpoint(p)), default=0)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint, or None when the run has none yet."""
    pointer = run_dir / CURRENT
    if not pointer.is_file():
        return None
    folder = run_dir / pointer.read_text().strip()
    try:
        progress = json.loads((folder / "progress.json").read_text())
        if progress.pop("format") != FORMAT:
            raise ValueError("unknown checkpoint format")
        progress["branch_losses"] = tuple(tuple(pair) for pair in progress.get("branch_losses", ()))
        progress["branch_entries"] = tuple(progress.get("branch_entries", ()))
        model = onnx.load(str(folder / "model.onnx"))
        sidecar = read_sidecar(folder / "model.inq.safetensors")
        optimizer = None
        if (folder / "optimizer.safetensors").exists():
            optimizer = dict(load_file(str(folder / "optimizer.safetensors")))
            from safetensors import safe_open

            with safe_open(str(folder / "optimizer.safetensors"), "numpy") as f:
                optimizer.update({k: float(v) for k, v in (f.metadata() or {}).items()})
        arrays = dict(load_file(str(folder / "step.safetensors"))) if (folder / "step.safetensors").exists() else None
    except (OSError, ValueError, KeyError, SidecarError) as e:
        raise SidecarError(f"the checkpoint in {folder} is damaged ({type(e).__name__}: {str(e)[:80]})",
                           f"delete {run_dir} to start the run over") from e
    return Checkpoint(model, sidecar, Progress(**progress), optimizer, arrays)
