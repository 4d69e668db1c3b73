"""The learning rate, found rather than guessed, and a guard on every INQ step.

Decisions are pure functions of numbers (the grid, the trial length, which trial wins, whether a
step went wrong); the plumbing that trains and measures them is in ``inq_onnx.train.loop``.

- **Search.** Before the first retraining step, every rate of a log grid trains the same state
  (right after the first partition) for the same few updates, on the same batches, with a fresh
  optimizer and the step's cosine decay compressed into the trial; the parameters are restored
  after each. With ``--optimizer auto`` the grid holds rates of both optimizers (SGD with momentum,
  the paper's, and AdamW), so the optimizer is found the same way. The candidate with the lowest
  held-out loss wins; candidates within ``TIE`` of the best count as tied, and among them SGD goes
  before AdamW and the smallest rate wins (a fine-tuned model is hurt more by a rate too large
  than by one too small). A winner at an end of its optimizer's grid is tried against the next
  rate past that end (3x up or down), at most ``MAX_EXTENSIONS`` times while the new one wins:
  the grid's ends are not walls. The grid's trials take at most ``SEARCH_SHARE`` of the run's
  updates. **Run-off.** With several optimizers, the short trials favour the one that fits
  fastest, which on a few hundred samples can be the one that overfits (PP-OCR cls: AdamW won
  the trials and ended its first step at 4.7x SGD's held-out loss). So when the trials' winner
  is not SGD, the paper's optimizer, each optimizer's winner trains ``RUNOFF_SHARE`` of the first
  step (at least ``RUNOFF_FACTOR`` trials' length) and the lower held-out loss takes the run
  (ties: SGD).
- **Check.** The first step is not like the later ones: with 20 % of the weights rounded the
  model is still near its float optimum and small steps win; with 90 % rounded the few free
  weights must move far to make up for the rest. So each later step first tries the run's rate
  against three times it (``check_candidates``, within its optimizer's grid), ``CHECK_SHARE`` of the step's
  updates each, and keeps the better (ties: the smaller); a step too short for ``MIN_CHECK_UPDATES``
  per candidate is not checked. Going down is the guard's job.
- **Guard.** A step whose training loss turns non-finite, or whose held-out loss ends far above
  where the step started (``far_above``), is rolled back to its start (parameters and optimizer
  state) and retried with the rate divided by ``RETRY_DIVISOR``, at most ``MAX_RETRIES`` times.
  The try that passes is kept; when none does, the step keeps its start (better than any of
  them). The kept rate (else the lowest tried) carries on to the next steps.
- **Held-out samples.** ``--val`` when given (a seeded subset of at most ``HOLDOUT_MAX``), else a
  seeded slice of ``--data`` that retraining never sees (``split_holdout``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from inq_onnx.data import Samples
from inq_onnx.train.options import OptimizerChoice

SGD, ADAMW = OptimizerChoice.SGD.value, OptimizerChoice.ADAMW.value
SGD_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
ADAMW_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
SEARCH_SHARE = 0.08  # of the run's training updates, spent in the first search (evaluations come on top)
CHECK_SHARE = 0.03  # of a later step's updates, per candidate of its check
CHECK_FACTOR = 3.0  # a later step tries its rate against this many times it
RUNOFF_SHARE = 0.25  # of the first step's updates, for each optimizer's winner
RUNOFF_FACTOR = 3  # ... and at least this many times a trial's updates
MAX_EXTENSIONS = 2  # trials past an end of the grid, while the winner sits at that end
MIN_CHECK_UPDATES = 10  # a step too short for this many updates per candidate is not checked
MIN_TRIAL_UPDATES = 20
TIE = 0.02  # relative: held-out losses within 2 % of the best are a tie, broken toward the smaller rate
FAR_FACTOR = 1.5  # a step is rolled back when its held-out loss ends above 1.5x its start ...
FAR_MARGIN = 1e-3  # ... plus this, so that a loss near 0 does not trip on noise
DIVERGED_FACTOR = 4.0  # checked halfway through a try: so far above the start that the try stops early
RETRY_DIVISOR = 3.0
MAX_RETRIES = 2
HOLDOUT_SHARE = 0.1
HOLDOUT_MAX = 1000
SEED_STREAM = 7_919  # the held-out draws' own random stream, apart from the batch orders


@dataclass(frozen=True, order=True)
class Rate:
    """A learning rate and the optimizer it is for."""

    optimizer: str
    lr: float


@dataclass(frozen=True)
class Trial:
    rate: Rate
    loss: float  # held-out loss after the trial; inf when it diverged

    def as_dict(self) -> dict:
        return {"optimizer": self.rate.optimizer, "lr": self.rate.lr,
                "loss": self.loss if math.isfinite(self.loss) else None}


GRIDS = {SGD: SGD_GRID, ADAMW: ADAMW_GRID}


def grid_for(optimizers: tuple[str, ...]) -> tuple[Rate, ...]:
    """The search's candidates: every rate of each optimizer's grid."""
    return tuple(Rate(o, lr) for o in optimizers for lr in GRIDS[o])


def trial_updates(step_updates: int, run_updates: int, grid_size: int) -> int:
    """Updates per trial: ``SEARCH_SHARE`` of the run's updates shared by the grid, at least
    ``MIN_TRIAL_UPDATES`` (a tiny run) and at most one step's updates."""
    share = int(SEARCH_SHARE * run_updates / max(1, grid_size))
    return max(0, min(step_updates, max(MIN_TRIAL_UPDATES, share)))


def runoff_updates(step_updates: int, trial: int) -> int:
    """Updates of each optimizer's winner in the run-off: ``RUNOFF_SHARE`` of the step, at least
    ``RUNOFF_FACTOR`` trials, at most the step."""
    return min(step_updates, max(RUNOFF_FACTOR * trial, int(RUNOFF_SHARE * step_updates)))


def check_candidates(rate: Rate) -> tuple[Rate, ...]:
    """The rates a later step tries: the run's, and three times it while that stays in its
    optimizer's grid."""
    up = Rate(rate.optimizer, rate.lr * CHECK_FACTOR)
    return (rate, up) if up.lr <= max(GRIDS[rate.optimizer]) * (1 + 1e-9) else (rate,)


def beyond(rate: Rate, tried: list[Rate]) -> Rate | None:
    """The next rate past the end of the rates tried for ``rate``'s optimizer, when ``rate`` sits
    at that end (``CHECK_FACTOR`` up or down); None when it lies inside them."""
    lrs = [r.lr for r in tried if r.optimizer == rate.optimizer]
    if len(lrs) < 2:
        return None
    if rate.lr >= max(lrs):
        return Rate(rate.optimizer, rate.lr * CHECK_FACTOR)
    if rate.lr <= min(lrs):
        return Rate(rate.optimizer, rate.lr / CHECK_FACTOR)
    return None


def check_updates(step_updates: int) -> int:
    """Updates per candidate of a later step's check; 0 (no check) when the step is too short for
    a check within its share."""
    updates = int(CHECK_SHARE * step_updates)
    return updates if updates >= MIN_CHECK_UPDATES else 0


def choose_rate(trials: list[Trial]) -> Rate:
    """The rate of the lowest held-out loss; ties (within ``TIE``) go to SGD, then to the smallest
    rate; when every trial diverged, the smallest rate of the first optimizer tried."""
    finite = [t for t in trials if math.isfinite(t.loss)]
    if not finite:
        first = trials[0].rate.optimizer
        return min(t.rate for t in trials if t.rate.optimizer == first)
    best = min(t.loss for t in finite)
    return min((t.rate for t in finite if t.loss <= best + TIE * abs(best)), key=lambda r: (r.optimizer != SGD, r.lr))


def far_above(loss: float, start: float, factor: float = FAR_FACTOR) -> bool:
    """Whether a held-out loss is so far above the step's start that the step went wrong."""
    return not math.isfinite(loss) or loss > factor * start + FAR_MARGIN


def retry_rate(rate: Rate) -> Rate:
    return Rate(rate.optimizer, rate.lr / RETRY_DIVISOR)


def keep_best(start_loss: float, tries: list[dict]) -> int | None:
    """Index of the try to keep: the last one when it passed the guard, else None, the step's
    start (every try ended far above it, so the start beats them all: no retraining beats a
    harmful one)."""
    if tries and not far_above(tries[-1]["loss"] if tries[-1].get("loss") is not None else math.inf, start_loss):
        return len(tries) - 1
    return None


def holdout_size(samples: int, batch_size: int) -> int:
    """How many samples of --data to hold out: ``HOLDOUT_SHARE`` of them, at most
    ``HOLDOUT_MAX``, and none when what remains would not fill two training batches."""
    n = min(HOLDOUT_MAX, max(1, round(HOLDOUT_SHARE * samples)))
    return n if samples - n >= 2 * batch_size else 0


def split_holdout(samples: Samples, batch_size: int, seed: int) -> tuple[Samples, Samples | None]:
    """(to train on, held out): a seeded random slice, since sample files are often sorted by class."""
    n = holdout_size(len(samples), batch_size)
    if n == 0:
        return samples, None
    order = np.random.default_rng([seed, SEED_STREAM]).permutation(len(samples))
    held, kept = np.sort(order[:n]), np.sort(order[n:])
    return subset(samples, kept, samples.source), subset(samples, held, f"{n} samples held out of {samples.source}")


def subset(samples: Samples, index: np.ndarray, source: str) -> Samples:
    labels = None if samples.labels is None else samples.labels[index]
    return Samples({k: v[index] for k, v in samples.inputs.items()}, labels, source, samples.sample_axes)


def capped(samples: Samples, seed: int, limit: int = HOLDOUT_MAX) -> Samples:
    """At most ``limit`` samples, a seeded random subset (sorted, so files read in order)."""
    if len(samples) <= limit:
        return samples
    index = np.sort(np.random.default_rng([seed, SEED_STREAM, 1]).permutation(len(samples))[:limit])
    return subset(samples, index, f"{limit} random samples of {samples.source}")


def padded_batches(samples: int, batch_size: int) -> list[np.ndarray]:
    """Indices of every sample in batches of exactly ``batch_size`` (the training graph's fixed
    size): the last batch is filled up from the first samples again."""
    batches = []
    for start in range(0, samples, batch_size):
        index = np.arange(start, start + batch_size) % samples
        batches.append(index)
    return batches


@dataclass(frozen=True)
class GuardState:
    """Where a step stands under the guard: the optimizer and rate of the current try, the
    held-out loss at the step's start, the tries finished so far (``{"lr", "loss", "train_loss",
    "outcome"}``) and the search made at this step, if any. Saved in the checkpoint, so that a
    resumed step goes on."""

    lr: float
    start_loss: float
    tries: tuple[dict, ...] = ()
    search: dict | None = None
    optimizer: str = SGD

    @property
    def rate(self) -> Rate:
        return Rate(self.optimizer, self.lr)

    def as_dict(self) -> dict:
        return {"lr": self.lr, "start_loss": self.start_loss, "tries": list(self.tries), "search": self.search,
                "optimizer": self.optimizer}

    @staticmethod
    def from_dict(data: dict) -> "GuardState":
        return GuardState(data["lr"], data["start_loss"], tuple(data.get("tries", ())), data.get("search"),
                          data.get("optimizer", SGD))


def step_outcome(guard: GuardState) -> tuple[int | None, Rate, dict]:
    """After a step's tries: which to keep (None: the step's start), the rate later steps start
    from (the kept try's, else the lowest tried), and what the run log records of it."""
    keep = keep_best(guard.start_loss, list(guard.tries))
    kept = guard.tries[keep] if keep is not None else None
    run_lr = kept["lr"] if kept is not None else min(t["lr"] for t in guard.tries)
    entry = {"optimizer": guard.optimizer, "lr": guard.tries[0]["lr"], "val_loss_start": guard.start_loss,
             "val_loss": kept["loss"] if kept else guard.start_loss, "kept": keep,
             "train_loss": kept["train_loss"] if kept else None}
    if len(guard.tries) > 1 or keep is None:
        entry["tries"] = list(guard.tries)
    if guard.search is not None:
        entry["lr_search"] = guard.search
    return keep, Rate(guard.optimizer, run_lr), entry


class HeldOutLoss:
    """The training graph's loss, averaged over fixed held-out batches (ONNX Runtime's eval model:
    no gradients). The batches (and the teacher's outputs, for distillation) are made once."""

    def __init__(self, setup, samples: Samples):
        feeder = copy.copy(setup.feeder)  # shares the teacher session; only the samples differ
        feeder.samples = samples
        self.samples = samples
        self.setup = setup
        self.batches = [feeder.feeds(index) for index in padded_batches(len(samples), setup.batch_size)]

    def __call__(self, params: np.ndarray) -> float:
        """The loss of ``params``, which stay loaded in the session."""
        self.setup.load(params)
        losses = [self.setup.session.eval_step(*feeds) for feeds in self.batches]
        loss = float(np.mean(losses))
        return loss if math.isfinite(loss) else math.inf
