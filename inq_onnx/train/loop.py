"""Algorithm 1 on any ONNX model: partition, quantize, retrain the rest, until all is quantized.

ONNX Runtime computes the loss and the gradients (artifacts built once per run); the update is
Eq. 8 applied by our own optimizer, so every frozen weight stays bit-identical. The user's graph
is only ever written with new values: the rewrites that make it trainable stay in the copy
ORT trains.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from inq_onnx.data import Samples
from inq_onnx.errors import Interrupted, SidecarError
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.incremental import InqOptions, check_sidecar, partition_step, quantized_share, start
from inq_onnx.optim import MaskedAdamW, MaskedSGD
from inq_onnx.schedule import LRDecay, LRSchedule
from inq_onnx.sidecar import check_compatible
from inq_onnx.train.checkpoint import CURRENT, Checkpoint, Progress, load_checkpoint, save_checkpoint
from inq_onnx.train.evaluate import evaluate
from inq_onnx.train.options import OptimizerChoice, TrainOptions
from inq_onnx.train.ort_training import require_training
from inq_onnx.train.params import ParamMap
from inq_onnx.train.pause import pause_point
from inq_onnx.train.setup import TrainingSetup, build_setup

log = logging.getLogger(__name__)
Event = Callable[[str, dict], None]
LOG = "log.jsonl"


@dataclass
class RunResult:
    model: onnx.ModelProto
    records: list[dict] = field(default_factory=list)
    resumed: bool = False


def retrain(model: onnx.ModelProto, train: Samples, *, inq: InqOptions, options: TrainOptions, run_dir: Path,
            val: Samples | None = None, on_event: Event = lambda kind, data: None) -> RunResult:
    """Run (or resume from ``run_dir``) full INQ on ``model``; returns the quantized model."""
    require_training()
    run_options = {**inq.as_dict(), **options.as_dict()}
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        ckpt = Checkpoint(model, start(model, inq), Progress(trained=True, options=run_options), None)
    else:
        check_resumable(model, ckpt, inq, run_options, run_dir)
        if ckpt.progress.trained and ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1:
            on_event("complete", {"run_dir": str(run_dir)})
            return RunResult(ckpt.model, read_log(run_dir), resumed=True)
        on_event("resumed", {"step": ckpt.sidecar.step, "epoch": ckpt.progress.epoch, "batch": ckpt.progress.batch,
                             "trained": ckpt.progress.trained})
    setup = build_setup(model, train, ckpt.sidecar, options, run_dir)
    loop = Loop(model, setup, inq, options, run_dir, val, on_event)
    return loop.run(ckpt)


def check_resumable(model, ckpt: Checkpoint, inq: InqOptions, run_options: dict, run_dir: Path) -> None:
    check_compatible(ckpt.sidecar, fingerprint=structure_fingerprint(model), bits=inq.quantize.bits,
                     schedule=inq.schedule, strategy=inq.strategy, seed=inq.seed, source=str(run_dir))
    if ckpt.progress.options != run_options:
        changed = sorted(k for k in run_options if run_options[k] != (ckpt.progress.options or {}).get(k))
        raise SidecarError(f"the run in {run_dir} was started with other options ({', '.join(changed)})",
                           f"run with the same options to resume, or delete {run_dir} to start over")
    check_sidecar(ckpt.model, ckpt.sidecar, inq, str(run_dir))


class Loop:
    def __init__(self, reference, setup: TrainingSetup, inq, options: TrainOptions, run_dir, val, on_event):
        self.reference, self.setup, self.inq, self.options = reference, setup, inq, options
        self.run_dir, self.val, self.on_event = run_dir, val, on_event
        self.stop_requested = False
        self.last_save = time.monotonic()

    def run(self, ckpt: Checkpoint) -> RunResult:
        resumed = ckpt.optimizer is not None or ckpt.sidecar.step >= 0
        if self.val is not None and ckpt.sidecar.step < 0:
            self.record(-1, 0.0, None, evaluate(self.reference, self.reference, self.val, self.setup.feeder.pins), 0.0)
        previous = signal.signal(signal.SIGINT, self.request_stop)
        try:
            while True:
                if ckpt.progress.trained:
                    if ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1:
                        return RunResult(ckpt.model, read_log(self.run_dir), resumed)
                    model, sidecar = partition_step(ckpt.model, ckpt.sidecar)
                    ckpt = Checkpoint(model, sidecar, Progress(False, options=ckpt.progress.options), None)
                ckpt = self.train_step(ckpt)
                last = ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1
                if self.stop_requested and not last:  # Ctrl-C after the step's last batch: its checkpoint is written
                    raise self.interrupted(f"after step {ckpt.sidecar.step + 1}")
        finally:
            signal.signal(signal.SIGINT, previous)

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def emit(self, kind: str, data: dict) -> None:
        pause_point(kind)
        self.on_event(kind, data)

    def interrupted(self, where: str) -> Interrupted:
        return Interrupted(f"interrupted {where}; a checkpoint was written to {self.run_dir}",
                           "run the same command again to resume from it")

    def train_step(self, ckpt: Checkpoint) -> Checkpoint:
        sidecar, step = ckpt.sidecar, ckpt.sidecar.step
        sigma = sidecar.schedule[step]
        started = time.monotonic()
        pmap: ParamMap = self.setup.params
        params = pmap.read(ckpt.model)
        self.setup.load(params)
        optimizer = self.make_optimizer(pmap.trainable(sidecar))
        if ckpt.optimizer is not None:
            optimizer.load_state_dict(ckpt.optimizer)
        epochs = 0 if sigma >= 1 else self.options.epochs_for(len(self.setup.feeder.samples))
        batches = self.setup.batches_per_epoch
        loss_sum, loss_count = ckpt.progress.loss_sum, ckpt.progress.loss_count  # a resumed step keeps its losses
        epoch, first = ckpt.progress.epoch, ckpt.progress.batch
        options = ckpt.progress.options
        lr = LRSchedule(self.options.learning_rate, LRDecay.COSINE)
        self.emit("step", {"step": step, "sigma": sigma, "epochs": epochs, "batches": batches,
                           "quantized": quantized_share(sidecar)})
        for epoch in range(epoch, epochs):
            for b, feeds in self.setup.feeder.batches(self.setup.batch_size, self.inq.seed, step, epoch, first):
                if self.stop_requested:
                    self.save(ckpt.model, sidecar, params, optimizer, Progress(False, epoch, b, options, loss_sum, loss_count))
                    raise self.interrupted(f"in step {step + 1}, epoch {epoch + 1}, batch {b + 1}")
                optimizer.lr = lr.at((epoch * batches + b) / max(1, epochs * batches))
                loss = float(self.setup.step(params, feeds, optimizer))
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                self.emit("batch", {"epoch": epoch, "batch": b, "loss": loss})
                if time.monotonic() - self.last_save > 60 * self.options.checkpoint_minutes:
                    self.save(ckpt.model, sidecar, params, optimizer,
                              Progress(False, epoch, b + 1, options, loss_sum, loss_count))
            first = 0
        model = onnx.ModelProto()
        model.CopyFrom(ckpt.model)
        pmap.write(model, params)
        metrics = evaluate(self.reference, model, self.val, self.setup.feeder.pins) if self.val is not None else {}
        self.record(step, sigma, loss_sum / loss_count if loss_count else None, metrics, time.monotonic() - started,
                    share=quantized_share(sidecar))
        done = Checkpoint(model, sidecar, Progress(True, options=options), None)
        self.save(done.model, sidecar, None, None, done.progress)
        return done

    def make_optimizer(self, trainable: np.ndarray):
        o = self.options
        if o.optimizer is OptimizerChoice.ADAMW:
            return MaskedAdamW(trainable, lr=o.learning_rate, weight_decay=o.weight_decay)
        return MaskedSGD(trainable, lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)

    def save(self, model, sidecar, params, optimizer, progress: Progress) -> None:
        if params is not None:
            model = onnx.ModelProto.FromString(model.SerializeToString())
            self.setup.params.write(model, params)
        save_checkpoint(self.run_dir, Checkpoint(model, sidecar, progress, optimizer.state_dict() if optimizer else None))
        self.last_save = time.monotonic()

    def record(self, step, sigma, loss, metrics: dict, seconds: float, share: float = 0.0) -> None:
        entry = {"step": step, "sigma": sigma, "quantized": share, "train_loss": loss, **metrics, "seconds": round(seconds, 2)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        append_line(self.run_dir / LOG, json.dumps(entry))
        self.emit("record", entry)


def append_line(path: Path, line: str) -> None:
    """Append one line; a line torn by a kill is ended first, so that it spoils only itself."""
    with open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode() + b"\n")


def interrupted_outside_training(run_dir: Path) -> Interrupted:
    """Ctrl-C while the run was being set up or its result written (no checkpoint at stake)."""
    if (run_dir / CURRENT).is_file():
        return Interrupted(f"interrupted; the checkpoint in {run_dir} is kept",
                           "run the same command again to resume from it")
    return Interrupted("interrupted before the first checkpoint", "run the same command again to start")


def read_log(run_dir: Path) -> list[dict]:
    """The run log (JSON lines), one record per step: a step logged twice (a kill between its
    record and its checkpoint) keeps its last record; a line torn by a kill is skipped."""
    path = run_dir / LOG
    if not path.exists():
        return []
    records = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            records[int(entry["step"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return [records[k] for k in sorted(records)]
