"""Which samples each If branch trains on, and which samples judge its learning rate and steps."""

from __future__ import annotations

from inq_onnx.data import Samples, branch_label
from inq_onnx.errors import DataError
from inq_onnx.train.lr_search import capped, split_holdout
from inq_onnx.train.options import TrainOptions


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


def held_out(train: Samples, val: Samples | None, options: TrainOptions, seed: int) -> tuple[Samples, Samples]:
    """(samples to train on, samples that judge the learning rate and each step): --val when it
    can feed the training graph's loss (labels, same sample shapes; a seeded subset of it when
    large), else a seeded slice of --data that is not trained on; with too few samples to spare
    one, the training samples themselves."""
    needs_labels = train.labels is not None and options.loss.value in ("auto", "cross-entropy")
    same_shapes = val is not None and all(val.inputs[k].shape[1:] == v.shape[1:] for k, v in train.inputs.items())
    if same_shapes and (val.labels is not None or not needs_labels):  # the training graph's shapes are fixed
        return train, capped(val, seed)
    kept, held = split_holdout(train, options.batch_for(len(train)), seed)
    if held is None:
        held = capped(train, seed)
        held = Samples(held.inputs, held.labels, f"the training samples of {train.source} (too few to hold some out)",
                       held.sample_axes)
    return kept, held
