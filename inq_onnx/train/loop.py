"""Algorithm 1 on any ONNX model: partition, quantize, retrain the rest, until all is quantized.

ONNX Runtime computes the loss and the gradients (artifacts built once per run); the update is
Eq. 8 applied by our own optimizer, so every frozen weight stays bit-identical. The user's graph
is only ever written with new values: the rewrites that make it trainable stay in the copy
ORT trains.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from inq_onnx.bias_correction import applies
from inq_onnx.calibration import correct_step
from inq_onnx.compensation import step_rounder
from inq_onnx.data import Samples, branch_label, pin_combinations, pinned_values
from inq_onnx.errors import Interrupted
from inq_onnx.incremental import InqOptions, partition_step, quantized_share, sidecar_rules, weight_sites
from inq_onnx.incremental import start as static_start
from inq_onnx.optim import MaskedAdamW, MaskedSGD
from inq_onnx.quantize import quantize_model
from inq_onnx.report import reason_counts
from inq_onnx.schedule import LRDecay, LRSchedule
from inq_onnx.train.checkpoint import Checkpoint, Progress, load_checkpoint, save_checkpoint
from inq_onnx.train.evaluate import evaluate_branches
from inq_onnx.train.lr_search import (ADAMW, DIVERGED_FACTOR, MAX_RETRIES, GuardState, HeldOutLoss, Rate, capped,
                                      far_above, retry_rate, step_outcome)
from inq_onnx.train.options import TrainOptions
from inq_onnx.train.ort_training import require_training
from inq_onnx.train.params import ParamMap
from inq_onnx.train.one_shot_check import one_shot_candidate
from inq_onnx.train.pause import pause_point
from inq_onnx.train.rate_trials import RateTrials, rate_fields
from inq_onnx.train.run_log import LOG, append_line, read_log
from inq_onnx.train.branch_samples import held_out, per_branch
from inq_onnx.train.resume import check_resumable, first_checkpoint
from inq_onnx.train.setup import LossNotFinite, TrainingSetup, build_setups, check_fits
from inq_onnx.train.teacher import check_teacher, is_quantized, teacher_fingerprint

log = logging.getLogger(__name__)
Event = Callable[[str, dict], None]


@dataclass(frozen=True)
class TryState:
    """What a checkpoint within a try must hold besides the weights and the optimizer."""

    guard: GuardState
    arrays: dict
    epochs: int
    batches: int


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
    if ckpt is not None:
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
    split = [held_out(t, v, options, inq.seed) for t, v in zip(trains, vals)]
    trains, judges = [s[0] for s in split], [s[1] for s in split]
    setups = build_setups(model, trains, ckpt.sidecar if ckpt else static_start(model, inq), options, run_dir, teacher)
    choice = None
    if ckpt is None:  # once the options are known to build: the n1 choice runs the model many times
        ckpt, choice = first_checkpoint(model, inq, [(t, pinned_values(model, c)) for t, c in zip(trains, combos)],
                                run_options, on_event)
    figures_on = [v if v is not None else j for v, j in zip(vals, judges)]
    loop = Loop(teacher, setups, inq, options, run_dir, figures_on, on_event, judges=judges, range_choice=choice)
    return loop.run(ckpt)


class Loop(RateTrials):
    """Algorithm 1 over one or several branches (training copies, one per pinned combination):
    at each step every branch is retrained in turn (``train_branch``, with ``self.setup``,
    ``self.val`` and ``self.heldout`` its own) under the step guard, which rolls a try that goes
    wrong back to the branch's start and retries it with a lower rate (lr_search); one
    partition and one mask sidecar cover the whole file."""

    def __init__(self, reference, setups: list[TrainingSetup], inq, options: TrainOptions, run_dir, vals, on_event, *,
                 judges: list[Samples | None] | None = None, range_choice: dict | None = None):
        self.reference, self.setups, self.inq, self.options = reference, setups, inq, options
        self.range_choice = range_choice  # what judging the n1 rules did: the run log's first line keeps it
        self.run_dir, self.vals, self.on_event = run_dir, vals, on_event
        judges = judges or [None] * len(setups)
        self.heldouts = [HeldOutLoss(s, j if j is not None else capped(s.feeder.samples, inq.seed))
                         for s, j in zip(setups, judges)]
        self.select(0)
        self.where: dict = {}  # the branch fields of a checkpoint's Progress written within a branch
        self.stop_requested = False
        self.rounded: dict = {}  # how the last partition step rounded: its log line keeps it
        self.last_save = time.monotonic()

    def select(self, index: int) -> None:
        self.branch, self.setup, self.val, self.heldout = index, self.setups[index], self.vals[index], self.heldouts[index]

    def run(self, ckpt: Checkpoint) -> RunResult:
        resumed = ckpt.optimizer is not None or ckpt.sidecar.step >= 0
        if any(v is not None for v in self.vals) and ckpt.sidecar.step < 0:
            choice = {"range_choice": self.range_choice} if self.range_choice else {}
            self.record(-1, 0.0, None, {**self.baseline(ckpt.sidecar), **choice}, 0.0)
        previous = signal.signal(signal.SIGINT, self.request_stop)
        try:
            while True:
                if ckpt.progress.trained:
                    if ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1:
                        return RunResult(ckpt.model, read_log(self.run_dir), resumed)
                    started = time.monotonic()
                    rounder = self.rounder(ckpt.model, ckpt.sidecar)
                    model, sidecar = partition_step(ckpt.model, ckpt.sidecar, rounder)
                    if rounder is not None:  # the seconds of measuring and rounding
                        self.rounded = {"feedback": {**rounder.counts(), "seconds": round(time.monotonic() - started, 2)}}
                    model = self.correct_biases(ckpt.model, model, sidecar)
                    ckpt = Checkpoint(model, sidecar, ckpt.progress.carried(), None)
                ckpt = self.train_step(ckpt)
                last = ckpt.sidecar.step == len(ckpt.sidecar.schedule) - 1
                if self.stop_requested and not last:  # Ctrl-C after the step's last batch: its checkpoint is written
                    raise self.interrupted(f"after step {ckpt.sidecar.step + 1}")
        finally:
            signal.signal(signal.SIGINT, previous)

    def baseline(self, sidecar) -> dict:
        """The float model's figures, and the one-shot model's on the run's codebooks (what
        retraining has to beat)."""
        started = time.monotonic()
        figures = self.validate(self.reference)
        rules = sidecar_rules(self.reference, sidecar, self.inq.quantize)
        one_shot = quantize_model(self.reference, self.inq.quantize, rules=rules).model
        figures.update({f"one_shot_{k}": v for k, v in self.validate(one_shot).items()
                        if k not in ("float_accuracy", "val_samples", "branches")})
        figures["val_source"] = "; ".join(dict.fromkeys(v.source for v in self.vals if v is not None))
        log.info("float and one-shot figures in %.1f s", time.monotonic() - started)
        return figures

    def rounder(self, model: onnx.ModelProto, sidecar):
        """Error feedback for the next partition step, measured on ``model`` (``compensation``)."""
        started = time.monotonic()
        rounder = step_rounder(model, sidecar, self.inq.quantize, self.setup.feeder.samples,
                               pins=self.setup.feeder.pins, seed=self.inq.seed)
        if rounder is None:
            return None
        log.info("error feedback measured for %d of %d weights in %.1f s%s", len(rounder.grams), len(sidecar.tensors),
                 time.monotonic() - started, f" (the others to nearest: {reason_counts(rounder.skipped)})" if rounder.skipped else "")
        return rounder

    def check_one_shot(self, ckpt: Checkpoint) -> tuple[Checkpoint, dict]:
        """The finished run against one-shot rounding with the same data (``one_shot_check``):
        the lower held-out loss, summed over branches, is kept."""
        started = time.monotonic()
        self.select(0)
        candidate = one_shot_candidate(self.reference, self.inq, ckpt.sidecar, self.setup.feeder.samples,
                                       self.setup.feeder.pins)
        if isinstance(candidate, str):
            return ckpt, {"skipped": candidate}
        losses = {name: sum(h(s.params.read(m)) for s, h in zip(self.setups, self.heldouts))
                  for name, m in (("inq", ckpt.model), ("one_shot", candidate))}
        kept = "one_shot" if losses["one_shot"] < losses["inq"] else "inq"
        verdict = {"held_out_loss": losses, "kept": kept, "seconds": round(time.monotonic() - started, 2)}
        if kept == "inq":
            return ckpt, verdict
        log.warning("one-shot rounding with error feedback on the same data ends below the retrained model on the "
                    "held-out samples (loss %.4g against %.4g): the one-shot model is kept", losses["one_shot"],
                    losses["inq"])
        return Checkpoint(candidate, ckpt.sidecar, ckpt.progress, None), verdict

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
            self.select(index)
            self.where = {"branch": index, "branch_losses": ckpt.progress.branch_losses,
                          "branch_entries": ckpt.progress.branch_entries}
            ckpt = self.train_branch(ckpt)
            if index + 1 < len(self.setups):
                self.save(ckpt.model, ckpt.sidecar, None, None, ckpt.progress)
        sidecar, progress = ckpt.sidecar, ckpt.progress
        check = {}
        if sidecar.step == len(sidecar.schedule) - 1:
            ckpt, check["one_shot_check"] = self.check_one_shot(ckpt)
        total, count = (sum(p[i] for p in progress.branch_losses) for i in (0, 1))
        metrics = {**(progress.branch_entries[-1] if progress.branch_entries else {}), **self.rounded, **check,
                   **self.validate(ckpt.model)}
        self.rounded = {}
        if len(self.setups) > 1:
            labels = [branch_label(s.feeder.pins) for s in self.setups]
            metrics["branch_train_loss"] = {k: p[0] / p[1] if p[1] else None for k, p in zip(labels, progress.branch_losses)}
            metrics["branch_lr"] = dict(zip(labels, progress.branch_entries))
        self.record(sidecar.step, sidecar.schedule[sidecar.step], total / count if count else None, metrics,
                    time.monotonic() - started, share=quantized_share(sidecar))
        done = Checkpoint(ckpt.model, sidecar, progress.carried(True), None)
        self.save(done.model, sidecar, None, None, done.progress)
        return done

    def validate(self, model: onnx.ModelProto) -> dict:
        return evaluate_branches(self.reference, model, [(s.feeder.pins, v) for s, v in zip(self.setups, self.vals)])

    def train_branch(self, ckpt: Checkpoint) -> Checkpoint:
        """Retrain the float part of step ``ckpt.sidecar.step`` in this branch under the guard: a
        try that goes wrong is rolled back to the branch's start and retried with a lower rate."""
        sidecar, step = ckpt.sidecar, ckpt.sidecar.step
        sigma = sidecar.schedule[step]
        started = time.monotonic()
        pmap: ParamMap = self.setup.params
        params = pmap.read(ckpt.model)
        self.setup.load(params)
        epochs = 0 if sigma >= 1 else self.options.epochs_for(len(self.setup.feeder.samples), self.setup.batch_size)
        batches = self.setup.batches_per_epoch
        progress = ckpt.progress
        self.emit("step", {"step": step, "sigma": sigma, "epochs": epochs, "batches": batches,
                           "quantized": quantized_share(sidecar), "branch": self.label()})
        if epochs * batches == 0:
            return self.finish_step(ckpt, params, None, {}, started)
        arrays = dict(ckpt.arrays or {})
        if progress.guard is None:  # the step starts now
            arrays = {"start": params.copy()}
            guard = self.start_guard(ckpt, params, step, epochs * batches)
        else:
            guard = GuardState.from_dict(progress.guard)
        optimizer_state, epoch, first = ckpt.optimizer, progress.epoch, progress.batch
        loss_sum, loss_count = progress.loss_sum, progress.loss_count  # a resumed try keeps its losses
        while True:
            optimizer = self.make_optimizer(pmap.trainable(sidecar), guard.rate)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            state = TryState(guard, arrays, epochs, batches)
            outcome, loss_sum, loss_count = self.train_try(ckpt, params, optimizer, state, epoch, first, loss_sum,
                                                           loss_count)
            end_loss = self.heldout(params) if outcome == "done" else math.inf
            tried = {"lr": guard.lr, "loss": end_loss if math.isfinite(end_loss) else None,
                     "train_loss": loss_sum / loss_count if loss_count else None, "outcome": outcome}
            guard = replace(guard, tries=guard.tries + (tried,))
            if not far_above(end_loss, guard.start_loss) or len(guard.tries) > MAX_RETRIES:
                break
            lower = retry_rate(guard.rate)
            self.emit("retry", {"step": step, "lr": guard.lr, "loss": tried["loss"], "start_loss": guard.start_loss,
                                "outcome": outcome, "next_lr": lower.lr})
            guard = replace(guard, lr=lower.lr)
            params[:] = arrays["start"]
            self.setup.load(params)
            optimizer_state, epoch, first, loss_sum, loss_count = None, 0, 0, 0.0, 0
        keep, rate, entry = step_outcome(guard)
        params = arrays["start"] if keep is None else params
        return self.finish_step(ckpt, params, rate, entry, started)

    def train_try(self, ckpt: Checkpoint, params: np.ndarray, optimizer, state: "TryState", epoch: int, first: int,
                  loss_sum: float, loss_count: int) -> tuple[str, float, int]:
        """One try at the step's epochs from (``epoch``, ``first``): "done", or "diverged" (a
        non-finite loss, or halfway a held-out loss so far above the start that going on is pointless)."""
        sidecar, step = ckpt.sidecar, ckpt.sidecar.step
        lr = LRSchedule(state.guard.lr, LRDecay.COSINE)
        epochs, batches = state.epochs, state.batches

        def progress(e, b):
            return ckpt.progress.carried(epoch=e, batch=b, loss_sum=loss_sum, loss_count=loss_count,
                                         guard=state.guard.as_dict(), **self.where)

        for epoch in range(epoch, epochs):
            for b, feeds in self.setup.feeder.batches(self.setup.batch_size, self.inq.seed, step, epoch, first):
                if self.stop_requested:
                    self.save(ckpt.model, sidecar, params, optimizer, progress(epoch, b), state.arrays)
                    where = f", branch {self.label()}" if self.label() else ""
                    raise self.interrupted(f"in step {step + 1}{where}, epoch {epoch + 1}, batch {b + 1}")
                optimizer.lr = lr.at((epoch * batches + b) / max(1, epochs * batches))
                try:
                    loss = float(self.setup.step(params, feeds, optimizer))
                except LossNotFinite:
                    return "diverged", loss_sum, loss_count
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                self.emit("batch", {"epoch": epoch, "batch": b, "loss": loss})
                if time.monotonic() - self.last_save > 60 * self.options.checkpoint_minutes:
                    self.save(ckpt.model, sidecar, params, optimizer, progress(epoch, b + 1), state.arrays)
            first = 0
            if epoch == (epochs - 1) // 2 < epochs - 1 and far_above(self.heldout(params), state.guard.start_loss,
                                                                     DIVERGED_FACTOR):
                return "diverged", loss_sum, loss_count  # halfway and hopeless: the next try starts sooner
        return "done", loss_sum, loss_count

    def finish_step(self, ckpt: Checkpoint, params: np.ndarray, rate: Rate | None, entry: dict,
                    started: float) -> Checkpoint:
        """The branch's trained values into the model; its rate, tries and losses into the progress."""
        model = onnx.ModelProto()
        model.CopyFrom(ckpt.model)
        self.setup.params.write(model, params)
        progress = ckpt.progress
        train_loss = entry.pop("train_loss", None)
        if not entry and progress.loss_count:
            train_loss = progress.loss_sum / progress.loss_count
        losses = (*self.where["branch_losses"], (train_loss, 1) if train_loss is not None else (0.0, 0))
        entries = (*self.where["branch_entries"], entry)
        return Checkpoint(model, ckpt.sidecar, progress.carried(branch=self.branch + 1, branch_losses=losses,
                                                                branch_entries=entries, **rate_fields(rate)), None)

    def make_optimizer(self, trainable: np.ndarray, rate: Rate):
        o = self.options
        if rate.optimizer == ADAMW:
            return MaskedAdamW(trainable, lr=rate.lr, weight_decay=o.weight_decay)
        return MaskedSGD(trainable, lr=rate.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def save(self, model, sidecar, params, optimizer, progress: Progress, arrays: dict | None = None) -> None:
        if params is not None:
            model = onnx.ModelProto.FromString(model.SerializeToString())
            self.setup.params.write(model, params)
        save_checkpoint(self.run_dir, Checkpoint(model, sidecar, progress, optimizer.state_dict() if optimizer else None,
                                                 arrays))
        self.last_save = time.monotonic()

    def record(self, step, sigma, loss, metrics: dict, seconds: float, share: float = 0.0) -> None:
        entry = {"step": step, "sigma": sigma, "quantized": share, "train_loss": loss, **metrics, "seconds": round(seconds, 2)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        append_line(self.run_dir / LOG, json.dumps(entry))
        self.emit("record", entry)
