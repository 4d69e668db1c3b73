"""Training batches: a fixed permutation per (seed, step, epoch), so a resumed run sees exactly
the batches an uninterrupted one would; teacher outputs for distillation."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import helper

from inq_onnx.data import Samples
from inq_onnx.runtime import providers_for, session
from inq_onnx.train.losses import LossKind, ResolvedLoss
from inq_onnx.train.rewrites._graph import value_types


def epoch_order(samples: int, seed: int, step: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, step, epoch]).permutation(samples)


def batch_count(samples: int, batch_size: int) -> int:
    """Full batches only: the training graph is pinned to one batch size."""
    return samples // batch_size


def with_outputs(model: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``names`` (intermediate tensors of its main graph)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {v.name for v in out.graph.output}
    missing = [n for n in names if n not in have]
    if missing:
        types = value_types(model)
        for name in missing:
            out.graph.output.append(helper.make_tensor_value_info(name, types.get(name, (onnx.TensorProto.FLOAT,))[0], None))
    return out


class Feeder:
    """Feeds for the training model's inputs, in its order, for one batch of sample indices."""

    def __init__(self, samples: Samples, loss: ResolvedLoss, step_inputs: tuple[str, ...], *,
                 teacher_model: onnx.ModelProto | None, pins: dict[str, np.ndarray], threads: int | None = None,
                 provider: str = "CPUExecutionProvider"):
        self.samples = samples
        self.loss = loss
        self.step_inputs = step_inputs
        self.pins = pins
        self.teacher = None
        self.teacher_tensors = loss.teacher_tensors
        if self.teacher_tensors:
            teacher = with_outputs(teacher_model, self.teacher_tensors)
            self.teacher = session(teacher, threads=threads or 0, providers=providers_for(provider))
        targets = [t.target for t in loss.distill]
        self.extra_inputs = (() if loss.kind is LossKind.CROSS_ENTROPY else (loss.extra_input,)) + tuple(targets)

    def batches(self, batch_size: int, seed: int, step: int, epoch: int, start: int = 0) -> Iterator[tuple[int, list]]:
        order = epoch_order(len(self.samples), seed, step, epoch)
        for b in range(start, batch_count(len(self.samples), batch_size)):
            yield b, self.feeds(np.sort(order[b * batch_size:(b + 1) * batch_size]))

    def feeds(self, index: np.ndarray) -> list[np.ndarray]:
        model_feeds = self.samples.take(index)
        extra = self.extra(index, model_feeds)
        return [model_feeds[name] if name in model_feeds else extra[name] for name in self.step_inputs]

    def extra(self, index: np.ndarray, model_feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Labels and teacher values, by the step input they feed."""
        extra = {}
        if self.loss.kind is LossKind.CROSS_ENTROPY:
            extra[self.loss.extra_input] = self.samples.labels[index].astype(np.int64)
        if self.teacher is not None:
            values = self.teacher.run(list(self.teacher_tensors), {**model_feeds, **self.pins})
            extra.update(zip(self.extra_inputs, values))
        return extra
