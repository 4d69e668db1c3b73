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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from inq_onnx.bias_correction import applies
from inq_onnx.calibration import correct_step
from inq_onnx.data import Samples, branch_label, pin_combinations, pinned_values
from inq_onnx.errors import DataError, Interrupted, SidecarError
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.incremental import InqOptions, check_sidecar, partition_step, quantized_share, start, weight_sites
from inq_onnx.optim import MaskedAdamW, MaskedSGD
from inq_onnx.schedule import LRDecay, LRSchedule
from inq_onnx.sidecar import check_compatible
from inq_onnx.train.checkpoint import CURRENT, Checkpoint, Progress, load_checkpoint, save_checkpoint
from inq_onnx.train.evaluate import evaluate
from inq_onnx.train.options import OptimizerChoice, TrainOptions
from inq_onnx.train.ort_training import require_training
from inq_onnx.train.params import ParamMap
from inq_onnx.train.pause import pause_point
from inq_onnx.train.setup import TrainingSetup, build_setups, check_fits
from inq_onnx.train.teacher import check_teacher, is_quantized, teacher_fingerprint

log = logging.getLogger(__name__)
Event = Callable[[str, dict], None]
LOG = "log.jsonl"


@dataclass
class RunResult:
    model: onnx.ModelProto
    records: list[dict] = field(default_factory=list)
    resumed: bool = False


def retrain(model: onnx.ModelProto, train: Samples | Sequence[Samples], *, inq: InqOptions, options: TrainOptions,
            run_dir: Path, val: Samples | Sequence[Samples] | None = None, teacher: onnx.ModelProto | None = None,
            on_event: Event = lambda kind, data: None) -> RunResult:
    """Run (or resume from ``run_dir``) full INQ on ``model``; returns the quantized model.

    ``options.pins`` may list several values per input (``{"sr": [16000, 8000]}``): every
    combination is a branch with its own training copy, retrained in turn at each step, with
    its own samples when ``train``/``val`` are sequences (one per combination, in order).
    Distillation and validation compare against ``teacher`` (default: ``model`` itself)."""
    combos = pin_combinations(options.pins)
    trains, vals = per_branch(train, combos, "train"), per_branch(val, combos, "val")
    require_training()
    run_options = {**inq.as_dict(), **options.as_dict()}
    if teacher is not None:
        check_teacher(model, teacher)
        run_options["teacher"] = teacher_fingerprint(teacher)
    on_event("teacher", {"given": teacher is not None, "model_quantized": is_quantized(model),
                         "teacher_quantized": is_quantized(teacher if teacher is not None else model)})
    teacher = model if teacher is None else teacher
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        ckpt = Checkpoint(model, start(model, inq), Progress(trained=True, options=run_options), None)
    else:
        check_resumable(model, ckpt, inq, run_options, run_dir)
        if ckpt.progress.trained and ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1:
            on_event("complete", {"run_dir": str(run_dir)})
            return RunResult(ckpt.model, read_log(run_dir), resumed=True)
        on_event("resumed", {"step": ckpt.sidecar.step, "epoch": ckpt.progress.epoch, "batch": ckpt.progress.batch,
                             "trained": ckpt.progress.trained,
                             "branch": branch_label(combos[ckpt.progress.branch]) if len(combos) > 1 else ""})
    for combo, *samples in zip(combos, trains, vals):  # before anything is built or written
        for s in samples:
            if s is not None:
                check_fits(teacher, s, pinned_values(model, combo))
    setups = build_setups(model, trains, ckpt.sidecar, options, run_dir, teacher)
    loop = Loop(teacher, setups, inq, options, run_dir, vals, on_event)
    return loop.run(ckpt)


def per_branch(samples, combos: list[dict], what: str) -> list:
    """One entry per pinned combination: a single Samples (or None) serves every branch."""
    if samples is None or isinstance(samples, Samples):
        return [samples] * len(combos)
    samples = list(samples)
    if len(samples) != len(combos):
        raise DataError(f"{len(samples)} {what} sample sets for {len(combos)} pinned branches "
                        f"({', '.join(branch_label(c) for c in combos)})",
                        "give one per pinned combination, in the same order, or one for all")
    return samples


def check_resumable(model, ckpt: Checkpoint, inq: InqOptions, run_options: dict, run_dir: Path) -> None:
    check_compatible(ckpt.sidecar, fingerprint=structure_fingerprint(model), bits=inq.quantize.bits,
                     schedule=inq.schedule, strategy=inq.strategy, seed=inq.seed, source=str(run_dir))
    if ckpt.progress.options != run_options:
        changed = sorted(k for k in run_options if run_options[k] != (ckpt.progress.options or {}).get(k))
        raise SidecarError(f"the run in {run_dir} was started with other options ({', '.join(changed)})",
                           f"run with the same options to resume, or delete {run_dir} to start over")
    check_sidecar(ckpt.model, ckpt.sidecar, inq, str(run_dir))


class Loop:
    """Algorithm 1 over one or several branches (training copies, one per pinned combination):
    at each step every branch is retrained in turn (``train_branch``, with ``self.setup`` and
    ``self.val`` its own); one partition and one mask sidecar cover the whole file."""

    def __init__(self, reference, setups: list[TrainingSetup], inq, options: TrainOptions, run_dir, vals, on_event):
        self.reference, self.setups, self.inq, self.options = reference, setups, inq, options
        self.run_dir, self.vals, self.on_event = run_dir, vals, on_event
        self.branch, self.setup, self.val = 0, setups[0], vals[0]
        self.where: dict = {}  # the branch fields of a checkpoint's Progress written within a branch
        self.stop_requested = False
        self.last_save = time.monotonic()

    def run(self, ckpt: Checkpoint) -> RunResult:
        resumed = ckpt.optimizer is not None or ckpt.sidecar.step >= 0
        if any(v is not None for v in self.vals) and ckpt.sidecar.step < 0:
            self.record(-1, 0.0, None, self.validate(self.reference), 0.0)
        previous = signal.signal(signal.SIGINT, self.request_stop)
        try:
            while True:
                if ckpt.progress.trained:
                    if ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1:
                        return RunResult(ckpt.model, read_log(self.run_dir), resumed)
                    model, sidecar = partition_step(ckpt.model, ckpt.sidecar)
                    model = self.correct_biases(ckpt.model, model, sidecar)
                    ckpt = Checkpoint(model, sidecar, Progress(False, options=ckpt.progress.options), None)
                ckpt = self.train_step(ckpt)
                last = ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1
                if self.stop_requested and not last:  # Ctrl-C after the step's last batch: its checkpoint is written
                    raise self.interrupted(f"after step {ckpt.sidecar.step + 1}")
        finally:
            signal.signal(signal.SIGINT, previous)

    def correct_biases(self, before: onnx.ModelProto, after: onnx.ModelProto, sidecar) -> onnx.ModelProto:
        """Bias correction after a partition step (``calibration.correct_step``), trained biases only."""
        if not applies(self.inq.quantize.bias_correction, paper_range=True, incremental=True):  # only when "on"
            return after
        sites = weight_sites(after, self.inq.quantize)
        return correct_step(before, after, [sites[k] for k in sidecar.tensors], self.setup.feeder.samples,
                            pins=self.setup.feeder.pins, biases=set(self.setup.params.order), seed=self.inq.seed)

    def request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def emit(self, kind: str, data: dict) -> None:
        pause_point(kind)
        self.on_event(kind, data)

    def interrupted(self, where: str) -> Interrupted:
        return Interrupted(f"interrupted {where}; a checkpoint was written to {self.run_dir}",
                           "run the same command again to resume from it")

    def label(self) -> str:
        return branch_label(self.setup.feeder.pins) if len(self.setups) > 1 else ""

    def train_step(self, ckpt: Checkpoint) -> Checkpoint:
        """Retrain each branch in turn from the one in progress (a checkpoint after each), then
        validate every branch and log the step."""
        started = time.monotonic()
        for index in range(ckpt.progress.branch, len(self.setups)):
            self.branch, self.setup, self.val = index, self.setups[index], self.vals[index]
            self.where = {"branch": index, "branch_losses": ckpt.progress.branch_losses}
            ckpt = self.train_branch(ckpt)
            if index + 1 < len(self.setups):
                self.save(ckpt.model, ckpt.sidecar, None, None, ckpt.progress)
        sidecar, progress = ckpt.sidecar, ckpt.progress
        total, count = (sum(p[i] for p in progress.branch_losses) for i in (0, 1))
        metrics = self.validate(ckpt.model)
        if len(self.setups) > 1:
            losses = {branch_label(s.feeder.pins): p[0] / p[1] if p[1] else None
                      for s, p in zip(self.setups, progress.branch_losses)}
            metrics = {**metrics, "branch_train_loss": losses}
        self.record(sidecar.step, sidecar.schedule[sidecar.step], total / count if count else None, metrics,
                    time.monotonic() - started, share=quantized_share(sidecar))
        done = Checkpoint(ckpt.model, sidecar, Progress(True, options=progress.options), None)
        self.save(done.model, sidecar, None, None, done.progress)
        return done

    def validate(self, model: onnx.ModelProto) -> dict:
        """Validation figures against the teacher; with several branches, each under its label
        in ``branches`` and their mean at the top level."""
        per = {branch_label(s.feeder.pins): evaluate(self.reference, model, v, s.feeder.pins)
               for s, v in zip(self.setups, self.vals) if v is not None}
        if len(self.setups) == 1:
            return next(iter(per.values()), {})
        top = {}
        for key in {k for m in per.values() for k in m}:
            values = [m.get(key) for m in per.values()]
            if all(isinstance(v, (int, float)) for v in values):
                top[key] = round(float(np.mean(values)), 4)
        return {**top, "branches": per} if per else {}

    def train_branch(self, ckpt: Checkpoint) -> Checkpoint:
        sidecar, step = ckpt.sidecar, ckpt.sidecar.step
        sigma = sidecar.schedule[step]
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
                           "quantized": quantized_share(sidecar), "branch": self.label()})
        for epoch in range(epoch, epochs):
            for b, feeds in self.setup.feeder.batches(self.setup.batch_size, self.inq.seed, step, epoch, first):
                if self.stop_requested:
                    self.save(ckpt.model, sidecar, params, optimizer,
                              Progress(False, epoch, b, options, loss_sum, loss_count, **self.where))
                    where = f", branch {self.label()}" if self.label() else ""
                    raise self.interrupted(f"in step {step + 1}{where}, epoch {epoch + 1}, batch {b + 1}")
                optimizer.lr = lr.at((epoch * batches + b) / max(1, epochs * batches))
                loss = float(self.setup.step(params, feeds, optimizer))
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                self.emit("batch", {"epoch": epoch, "batch": b, "loss": loss})
                if time.monotonic() - self.last_save > 60 * self.options.checkpoint_minutes:
                    self.save(ckpt.model, sidecar, params, optimizer,
                              Progress(False, epoch, b + 1, options, loss_sum, loss_count, **self.where))
            first = 0
        model = onnx.ModelProto()
        model.CopyFrom(ckpt.model)
        pmap.write(model, params)
        finished = (*self.where["branch_losses"], (loss_sum, loss_count))
        return Checkpoint(model, sidecar, Progress(False, options=options, branch=self.branch + 1,
                                                   branch_losses=finished), None)

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
