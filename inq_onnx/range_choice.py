"""Which n1 rule each weight gets when samples are at hand: the one that disturbs the model's
outputs least.

The rules of ``codebook_range`` judge a codebook by its weight error, and weight error is not
output error: on silero-vad a few outliers hold most of an encoder tensor's norm, and only MAE
(which clamps them) keeps the model working at 4 bits per tensor; on the CNNs and the ViT the
largest weights matter and the paper's n1 or MSE win. So with samples (full INQ's training data,
one-shot's ``--val``), ``--range auto`` judges by the outputs instead:

1. every weight is rounded by the static AUTO rule (``resolve_rule``), as without samples;
2. each weight in turn, in graph order, is rounded by every other rule (PAPER, MSE, MAE) that
   gives it a different codebook, the model is run on the same few samples, and the rule with
   the least output error stays (a tie keeps the earlier one).

Before retraining, only rules that clamp at least as hard as the static one are tried
(``clamp_only``: n1 at or below it). One-shot output error favours a larger n1 that keeps a
layer's largest weights and zeroes more of the rest, but retraining cannot bring zeroed weights
back: on lenet5_mnist at 3 bits full INQ ended at 0.975 from the unrestricted choice and at 0.983
with this restriction, as from the static MSE rule (bench/zoo_inq.py). Clamping harder (silero)
is what retraining can build on. And before retraining the chosen rules replace the static ones
only where they at least halve the output error (``min_gain``): retraining repairs a moderate
rounding error either way, and where the choice gained less it ended lower as often as higher
(vit_mnist 4 bits: 0.965 from a choice that cut the error from 0.048 to 0.044, 0.970 from the
paper's rule); the choice exists for a static rule that breaks the model (silero: 4.8 -> 0.37).

One pass of coordinate descent: one ONNX Runtime session per distinct alternative, each run on
``SEARCH_SAMPLES`` samples (fewer where each is large: at most ``SEARCH_VALUES`` input values).
Output error is the distillation loss without training: the sum over the float outputs of mean((y_q - y)^2) / mean(y^2), y from the float model on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from inq_onnx import codebook
from inq_onnx.codebook_range import RangeRule, make_codebook_by, resolve_rule
from inq_onnx.data import Samples
from inq_onnx.graph.io import fits_one_session
from inq_onnx.graph.passes import copy_model
from inq_onnx.graph.tensors import TensorSite, read_tensor, write_tensor
from inq_onnx.quantize import round_blocks
from inq_onnx.runtime import first_line, session

__all__ = ["SEARCH_SAMPLES", "RULES", "RangeChoice", "OutputJudge", "output_judge", "choose_rules", "output_error"]

SEARCH_SAMPLES = 64  # a seeded random subset: sample files are often sorted by class
SEARCH_VALUES = 1 << 22  # fewer samples where they are large (photos): each trial stays one short run
BATCH = 32
RULES = (RangeRule.PAPER, RangeRule.MSE, RangeRule.MAE)
"""The rules tried, in tie-breaking order after the static one."""


@dataclass(frozen=True)
class RangeChoice:
    """The rule per weight, and what choosing it by the outputs did (or why it was not done)."""

    rules: dict[TensorSite, RangeRule]
    samples: int = 0
    runs: int = 0  # ONNX Runtime sessions built and run on the samples
    error_static: float | None = None  # output error with the static AUTO rules
    error_chosen: float | None = None  # ... with the rules chosen here
    changed: dict[str, str] = field(default_factory=dict)  # weight name -> the rule that replaced the static one
    error: str | None = None  # the model could not be run on the samples: the static rules stand
    kept_static: bool = False  # the choice gained less than min_gain: the static rules stand

    def as_dict(self) -> dict:
        return {"samples": self.samples, "runs": self.runs, "error_static": self.error_static,
                "error_chosen": self.error_chosen, "changed": dict(self.changed), "error": self.error,
                "kept_static": self.kept_static}


def output_error(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Sum over outputs of mean((y_q - y)^2) / mean(y^2) (an all-zero output: its mean square)."""
    total = 0.0
    for y, q in zip(reference, outputs):
        y, q = np.asarray(y, np.float64), np.asarray(q, np.float64)
        if not np.all(np.isfinite(q)):
            return float("inf")
        power = float(np.mean(y * y)) if y.size else 0.0
        total += float(np.mean((q - y) ** 2)) / (power if power > 0 else 1.0) if y.size else 0.0
    return total


def codebooks_by_rule(w: np.ndarray, bits: int, axes: tuple[int, ...]) -> dict[RangeRule, codebook.Codebook]:
    return {rule: make_codebook_by(w, bits, axes, rule) for rule in RULES}


def distinct_rules(by_rule: dict[RangeRule, np.ndarray]) -> list[RangeRule]:
    """The rules of ``RULES`` that give a codebook no earlier rule gives (rules sharing one share its rounded copy)."""
    return [r for i, r in enumerate(RULES) if all(by_rule[r] is not by_rule[p] for p in RULES[:i])]


def canonical(by_rule: dict[RangeRule, np.ndarray], rule: RangeRule, static: RangeRule) -> RangeRule:
    """The rule to record for ``rule``'s codebook: the static one if it gives the same, else the first that does."""
    if by_rule[rule] is by_rule[static]:
        return static
    return next(r for r in RULES if by_rule[r] is by_rule[rule])


class OutputJudge:
    """The float model's outputs on fixed feeds, and the error of a model against them."""

    def __init__(self, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], samples: int):
        self.feeds, self.samples = feeds, samples
        sess = session(model)
        self.names = [o.name for o in sess.get_outputs() if o.type.startswith("tensor(float") or o.type == "tensor(double)"]
        self.reference = [sess.run(self.names, f) for f in feeds]
        self.runs = 0

    def error(self, model: onnx.ModelProto) -> float:
        sess = session(model)
        self.runs += 1
        return sum(output_error(ref, sess.run(self.names, f)) for ref, f in zip(self.reference, self.feeds))


def best_uniform(judge: OutputJudge, work: onnx.ModelProto, options: dict, static: dict, static_error: float):
    """The start of the descent: the static rules, or one rule for every weight if that does
    better (where a few outliers break every tensor, no single tensor's change shows)."""
    chosen, best = dict(static), static_error
    for rule in RULES:
        if all(by_rule[rule] is by_rule[static[site]] for site, by_rule in options.items()):
            continue
        for site, by_rule in options.items():
            write_tensor(work, site, by_rule[rule])
        err = judge.error(work)
        if err < best:
            best, chosen = err, {**static, **dict.fromkeys(options, rule)}
    for site, by_rule in options.items():
        write_tensor(work, site, by_rule[chosen[site]])
    return chosen, best


def output_judge(model: onnx.ModelProto, branches: list[tuple[Samples, dict]], *, limit: int = SEARCH_SAMPLES,
                 seed: int = 0) -> OutputJudge | str:
    """A judge on at most ``limit`` samples of each branch (samples and the pinned inputs they go
    with; fewer where samples are large), or why there can be none."""
    if not fits_one_session(model):
        return "the model has external data or is over 2 GB (every trial would copy it whole into ONNX Runtime)"
    feeds, count = [], 0
    for samples, pins in branches:
        size = sum(int(np.prod(v.shape[1:], dtype=np.int64)) for v in samples.inputs.values())
        index = np.sort(np.random.default_rng(seed).permutation(len(samples))[:min(limit, max(1, SEARCH_VALUES // size))])
        feeds += [{**samples.take(index[s:s + BATCH]), **pins} for s in range(0, len(index), BATCH)]
        count += len(index)
    try:
        return OutputJudge(model, feeds, count)
    except Exception as e:  # ORT's own errors are untyped
        return f"the model could not be run on the samples: {first_line(e)}"


def choose_rules(model: onnx.ModelProto, weights: dict[TensorSite, tuple[int, ...]], bits: int,
                 judge: OutputJudge | str, *, clamp_only: bool = False, min_gain: float = 1.0) -> RangeChoice:
    """The n1 rule of every weight in ``weights`` (site -> channel axes, () per tensor) for ``bits``
    bits, chosen by ``judge`` (see :func:`output_judge`; a string: why there is none). Weights that
    cannot be rounded (all zero, not finite) keep the static rule; so does every weight when the
    model cannot be run (``error`` says why). ``clamp_only``: only rules whose n1 is at or below
    the static rule's are tried; ``min_gain``: the chosen rules stand only if they divide the
    output error by at least this much (retraining: see the module docstring)."""
    static = {site: resolve_rule(RangeRule.AUTO, bits, bool(axes)) for site, axes in weights.items()}
    if isinstance(judge, str):
        return RangeChoice(static, error=judge)
    work = copy_model(model)
    options: dict[TensorSite, dict[RangeRule, np.ndarray]] = {}
    for site, axes in weights.items():
        w = read_tensor(model, site)
        try:
            books = codebooks_by_rule(w, bits, axes)
        except ValueError:  # all zeros or not finite: quantization skips it
            continue
        if clamp_only:  # a rule that would raise n1 stands for the static one
            top = books[static[site]].n1
            books = {rule: book if np.all(book.n1 <= top) else books[static[site]] for rule, book in books.items()}
        options[site] = by_rule = {}
        for rule in RULES:  # rules that give the same codebook share one rounded copy
            same = next((r for r in by_rule if np.array_equal(books[r].n1, books[rule].n1)), None)
            by_rule[rule] = by_rule[same] if same is not None else round_blocks(w, books[rule])
        write_tensor(work, site, options[site][static[site]])
    runs = judge.runs
    try:
        before = judge.error(work)
        chosen, best = best_uniform(judge, work, options, static, before)
        for site, by_rule in options.items():
            for rule in distinct_rules(by_rule):
                if by_rule[rule] is by_rule[chosen[site]]:
                    continue
                write_tensor(work, site, by_rule[rule])
                err = judge.error(work)
                if err < best:
                    best, chosen[site] = err, rule
            write_tensor(work, site, by_rule[chosen[site]])
    except Exception as e:  # ORT's own errors are untyped; the static rules then stand, and it is said
        return RangeChoice(static, judge.samples, error=f"the model could not be run on the samples: {first_line(e)}")
    chosen = {site: canonical(options[site], rule, static[site]) if site in options else rule
              for site, rule in chosen.items()}
    changed = {site.name: rule.value for site, rule in chosen.items() if rule is not static[site]}
    if changed and best * min_gain > before:
        return RangeChoice(static, judge.samples, judge.runs - runs, before, best, {}, kept_static=True)
    return RangeChoice(chosen, judge.samples, judge.runs - runs, before, best, changed)
