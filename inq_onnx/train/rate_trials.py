"""The learning-rate trials of a run: a step's rate and optimizer, found (or checked) by short
trainings from the step's start. What wins is decided by ``lr_search``'s pure functions; this is
the part of the ``Loop`` that trains and measures them."""

from __future__ import annotations

import math
import time

import numpy as np

from inq_onnx.schedule import LRDecay, LRSchedule
from inq_onnx.train.checkpoint import Checkpoint, Progress
from inq_onnx.train.lr_search import (MAX_EXTENSIONS, SGD, GuardState, Rate, Trial, beyond, check_candidates,
                                      check_updates, choose_rate, grid_for, runoff_updates, trial_updates)
from inq_onnx.train.setup import LossNotFinite

TRIAL_STREAM = 1_000_000  # the learning-rate trials' batch order, apart from every step's


def run_rate(progress: Progress) -> Rate | None:
    """The run's rate once searched (checkpoints from before the optimizer was searched: SGD)."""
    return None if progress.lr is None else Rate(progress.optimizer or SGD, progress.lr)


def rate_fields(rate: Rate | None) -> dict:
    """The Progress fields that hold ``rate`` (none for None: the run's stays)."""
    return {} if rate is None else {"lr": rate.lr, "optimizer": rate.optimizer}


class RateTrials:
    """Mixed into ``loop.Loop``, whose ``setup``, ``heldout``, ``options``, ``inq``, ``make_optimizer``,
    ``save``, ``interrupted``, ``emit``, ``where`` and ``stop_requested`` it uses."""

    def start_guard(self, ckpt: Checkpoint, start: np.ndarray, step: int, step_updates: int) -> GuardState:
        """The step's held-out loss at its start, and its rate: --lr (or what the guard lowered
        it to), else a search at the first step and a check against a larger rate at later ones."""
        search, rate = None, run_rate(ckpt.progress)
        if rate is None and self.options.lr is not None:
            rate = Rate(self.options.optimizers[0], self.options.lr)
        if rate is None:
            grid = grid_for(self.options.optimizers)
            steps_left = sum(1 for s in ckpt.sidecar.schedule[step:] if s < 1)
            updates = trial_updates(step_updates, steps_left * step_updates, len(grid))
            rate, search = self.search_lr(ckpt, start, step, grid, updates, "search",
                                          runoff_updates(step_updates, updates))
        elif self.options.lr is None and len(check_candidates(rate)) > 1 and check_updates(step_updates):
            rate, search = self.search_lr(ckpt, start, step, check_candidates(rate), check_updates(step_updates),
                                          "check")
        self.setup.load(start)
        return GuardState(lr=rate.lr, start_loss=self.heldout(start), search=search, optimizer=rate.optimizer)

    def search_lr(self, ckpt: Checkpoint, start: np.ndarray, step: int, grid: tuple[Rate, ...], updates: int,
                  kind: str, runoff: int = 0) -> tuple[Rate, dict]:
        """Short trials of every rate of ``grid`` from ``start`` (restored after each). In a
        search, an optimizer's winner at an end of its grid goes on past it (``beyond``), and when
        the first optimizer (the paper's SGD) lost, each optimizer's winner trains ``runoff``
        updates and the lower held-out loss wins."""
        began = time.monotonic()
        trials = [Trial(rate, self.trial(ckpt, start, step, rate, updates)) for rate in grid]
        finalists = []
        for optimizer in dict.fromkeys(rate.optimizer for rate in grid):
            own = [t for t in trials if t.rate.optimizer == optimizer]
            best = choose_rate(own)
            for _ in range(MAX_EXTENSIONS if kind == "search" else 0):
                further = beyond(best, [t.rate for t in own])
                if further is None:
                    break
                own.append(Trial(further, self.trial(ckpt, start, step, further, updates)))
                trials.append(own[-1])
                best, before = choose_rate(own), best
                if best == before:
                    break
            finalists.append(best)
        chosen, finals = choose_rate(trials), []
        if chosen.optimizer != grid[0].optimizer and runoff:  # the paper's optimizer lost the short trials
            finals = [Trial(rate, self.trial(ckpt, start, step, rate, runoff)) for rate in finalists]
            chosen = choose_rate(finals)
        self.setup.load(start)
        search = {"kind": kind, "chosen": chosen.lr, "optimizer": chosen.optimizer, "updates": updates,
                  "trials": [t.as_dict() for t in trials], "seconds": round(time.monotonic() - began, 2),
                  "judged_on": self.heldout.samples.source}
        if finals:
            search.update(runoff=[t.as_dict() for t in finals], runoff_updates=runoff)
        self.emit("lr_search", search)
        return chosen, search

    def trial(self, ckpt: Checkpoint, start: np.ndarray, step: int, rate: Rate, updates: int) -> float:
        """The held-out loss after ``updates`` updates at ``rate`` from ``start`` (inf: diverged)."""
        params = start.copy()
        self.setup.load(params)
        optimizer = self.make_optimizer(self.setup.params.trainable(ckpt.sidecar), rate)
        schedule = LRSchedule(rate.lr, LRDecay.COSINE)
        try:
            for n, feeds in enumerate(self.trial_batches(step, updates)):
                if self.stop_requested:  # back to the step's start: the search is redone on resume
                    self.save(ckpt.model, ckpt.sidecar, start, None, ckpt.progress.carried(**self.where))
                    raise self.interrupted(f"in step {step + 1}, while choosing the learning rate")
                optimizer.lr = schedule.at(n / updates)
                self.setup.step(params, feeds, optimizer)
        except LossNotFinite:
            return math.inf
        return self.heldout(params)

    def trial_batches(self, step: int, updates: int):
        """``updates`` batches of a stream of their own (the same for every rate)."""
        n, epoch = 0, 0
        while True:
            for _, feeds in self.setup.feeder.batches(self.setup.batch_size, self.inq.seed, TRIAL_STREAM + step, epoch):
                if n == updates:
                    return
                yield feeds
                n += 1
            epoch += 1
