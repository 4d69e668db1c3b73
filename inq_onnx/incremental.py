"""INQ's partition-and-quantize step on a model, with its state in a mask sidecar.

No training here: :func:`partition_step` grows every mask to the next sigma and rounds the newly
frozen weights; retraining in between is ``train/`` (or any framework honouring the mask).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from inq_onnx.codebook_range import RangeRule, make_codebook_by, resolve_rule
from inq_onnx.data import Samples
from inq_onnx.errors import SidecarError
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.graph.passes import copy_model
from inq_onnx.graph.tensors import TensorSite, read_tensor, write_tensor
from inq_onnx.graph.weights import select_weights
from inq_onnx.options import QuantizeOptions
from inq_onnx.partition import PartitionStrategy, apply_step, frozen_off_codebook, grow_mask, initial_mask, partition_rng
from inq_onnx.quantize import stamp_metadata
from inq_onnx.schedule import check_schedule, default_schedule
from inq_onnx.sidecar import Sidecar, TensorState, check_compatible


@dataclass(frozen=True)
class InqOptions:
    """One-shot options plus the incremental schedule and partition."""

    quantize: QuantizeOptions
    schedule: tuple[float, ...] = ()
    strategy: PartitionStrategy = PartitionStrategy.MAGNITUDE
    seed: int = 0

    def __post_init__(self) -> None:
        sigmas = self.schedule or default_schedule(self.quantize.bits)
        object.__setattr__(self, "schedule", check_schedule(sigmas))
        object.__setattr__(self, "strategy", PartitionStrategy(self.strategy))

    def as_dict(self) -> dict:
        return {**self.quantize.as_dict(), "schedule": list(self.schedule), "partition": self.strategy.value,
                "seed": self.seed}


def weight_sites(model: onnx.ModelProto, options: QuantizeOptions) -> dict[str, TensorSite]:
    """The selected weights by name (a name defined in several subgraphs gets a path suffix)."""
    chosen = [c for c in select_weights(model, include=options.include, exclude=options.exclude,
                                        min_size=options.min_size) if c.selected]
    names = [c.name for c in chosen]
    return {(c.name if names.count(c.name) == 1 else f"{c.name}@{c.site.graph_path}"): c.site for c in chosen}


RETRAINING_GAIN = 2.0  # before retraining, chosen n1 rules must halve the output error (range_choice)


def choose_ranges(model: onnx.ModelProto, options: InqOptions, branches: list[tuple[Samples, dict]]):
    """With ``--range auto``: each weight's n1 rule judged by the outputs on the training samples
    (``range_choice``; only rules that clamp at least as hard as the static one), or None for
    the other rules."""
    if options.quantize.range is not RangeRule.AUTO:
        return None
    from inq_onnx.range_choice import choose_rules, output_judge

    axes = channel_axes(model, options.quantize)
    weights = {site: axes.get(site, ()) for site in weight_sites(model, options.quantize).values()}
    return choose_rules(model, weights, options.quantize.bits, output_judge(model, branches, seed=options.seed),
                        clamp_only=True, min_gain=RETRAINING_GAIN)


def channel_axes(model: onnx.ModelProto, options: QuantizeOptions) -> dict[TensorSite, tuple[int, ...]]:
    if not options.per_channel:
        return {}
    return {c.site: c.channel_axes for c in select_weights(model, include=options.include, exclude=options.exclude,
                                                           min_size=options.min_size) if c.selected and c.channel_axes}


def start(model: onnx.ModelProto, options: InqOptions, rules: dict[TensorSite, RangeRule] | None = None) -> Sidecar:
    """The state before step 1: codebooks from the pre-trained weights, pruned zeros frozen.
    ``rules`` overrides the n1 rule that ``options.quantize.range`` resolves to, per weight."""
    axes = channel_axes(model, options.quantize)
    tensors = {}
    for key, site in weight_sites(model, options.quantize).items():
        w = read_tensor(model, site)
        rule = (rules or {}).get(site) or resolve_rule(options.quantize.range, options.quantize.bits,
                                                       bool(axes.get(site)))
        try:
            book = make_codebook_by(w, options.quantize.bits, axes.get(site, ()), rule)
        except ValueError:  # all zeros or not finite: nothing to learn, left as is
            continue
        mask = initial_mask(w)
        tensors[key] = TensorState(mask=mask, codebook=book, dtype=str(w.dtype), n_pruned=int(mask.sum()),
                                   range_rule=rule)
    return Sidecar(bits=options.quantize.bits, schedule=options.schedule, step=-1, strategy=options.strategy,
                   seed=options.seed, fingerprint=structure_fingerprint(model), options=options.as_dict(),
                   tensors=tensors)


def check_sidecar(model: onnx.ModelProto, sidecar: Sidecar, options: InqOptions, source: str = "") -> None:
    """Refuse a sidecar of another model or other options, or one whose frozen weights moved."""
    check_compatible(sidecar, fingerprint=structure_fingerprint(model), bits=options.quantize.bits,
                     schedule=options.schedule, strategy=options.strategy, seed=options.seed, source=source)
    sites = weight_sites(model, options.quantize)
    for key, state in sidecar.tensors.items():
        if key not in sites:
            raise SidecarError(f"the sidecar {source} names a weight '{key}' this model does not have",
                               "give the model the sidecar was made for")
        moved = frozen_off_codebook(read_tensor(model, sites[key]), state.mask, state.codebook)
        if moved:
            raise SidecarError(f"{moved} frozen weights of '{key}' left their codebook since the last step",
                               "retrain with the mask applied (frozen weights must not change), see the README, 'The mask sidecar'")


def partition_step(model: onnx.ModelProto, sidecar: Sidecar, rounder=None) -> tuple[onnx.ModelProto, Sidecar]:
    """Step ``sidecar.step + 1``: grow every mask to its sigma, round the newly frozen weights
    (each to nearest, or by ``rounder(site, w, old_mask, new_mask, codebook)``, which must keep
    the frozen entries and put the new ones in the codebook)."""
    step = sidecar.step + 1
    if step >= len(sidecar.schedule):
        raise SidecarError("every weight is already quantized (the last INQ step is done)",
                           "export the model, e.g. `inq-onnx export MODEL --format compact`")
    sigma = sidecar.schedule[step]
    out = copy_model(model)
    sites = weight_sites(out, QuantizeOptions(**quantize_options_of(sidecar)))
    tensors = {}
    for key, state in sidecar.tensors.items():
        w = read_tensor(out, sites[key])
        rng = partition_rng(sidecar.seed, key, step) if sidecar.strategy is PartitionStrategy.RANDOM else None
        mask = grow_mask(w, state.mask, sigma, n_pruned=state.n_pruned, strategy=sidecar.strategy, rng=rng,
                         codebook=state.codebook)
        rounded = (rounder or _nearest)(sites[key], w, state.mask, mask, state.codebook)
        write_tensor(out, sites[key], rounded)
        tensors[key] = replace(state, mask=mask)
    new_state = replace(sidecar, step=step, tensors=tensors)
    if is_complete(new_state):
        stamp_final(out, new_state, sites)
    return out, new_state


def _nearest(site, w, old, new, book):
    return apply_step(w, old, new, book)


def is_complete(sidecar: Sidecar) -> bool:
    return sidecar.step == len(sidecar.schedule) - 1


def options_of(sidecar: Sidecar) -> InqOptions:
    """The options a sidecar was made with, to continue a run without repeating them."""
    return InqOptions(QuantizeOptions(**quantize_options_of(sidecar)), schedule=sidecar.schedule,
                      strategy=sidecar.strategy, seed=sidecar.seed)


def quantize_options_of(sidecar: Sidecar) -> dict:
    """The one-shot options a sidecar records (one written before ``range``, ``bias_correction``
    and ``rounding`` existed: the paper's n1, no correction, rounding to nearest)."""
    keys = ("bits", "per_channel", "include", "exclude", "min_size", "range", "bias_correction", "rounding")
    recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in sidecar.options.items() if k in keys}
    return {"range": RangeRule.PAPER.value, "bias_correction": "off", "rounding": "nearest", **recorded}


def sidecar_rules(model: onnx.ModelProto, sidecar: Sidecar, options: QuantizeOptions) -> dict[TensorSite, RangeRule]:
    """The n1 rule of each of ``sidecar``'s weights, by site in ``model`` (a one-shot rounding on
    the run's codebooks: ``quantize_model(..., rules=...)``)."""
    sites = weight_sites(model, options)
    return {sites[k]: t.range_rule for k, t in sidecar.tensors.items() if k in sites}


def stamp_final(model: onnx.ModelProto, sidecar: Sidecar, sites: dict[str, TensorSite]) -> None:
    """Once every weight is frozen, the model carries the same stamp as a one-shot result."""
    options = QuantizeOptions(**quantize_options_of(sidecar))
    recorded = {sites[k].name: {"channel_axes": list(s.codebook.channel_axes), "range": s.range_rule.value}
                for k, s in sidecar.tensors.items()}
    stamp_metadata(model, options, recorded)


def quantized_share(sidecar: Sidecar) -> float:
    total = sum(s.mask.size for s in sidecar.tensors.values())
    return sum(int(np.count_nonzero(s.mask)) for s in sidecar.tensors.values()) / total if total else 1.0
