"""Training batches: a fixed permutation per (seed, step, epoch), so a resumed run sees exactly
the batches an uninterrupted one would; teacher outputs for distillation."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx

from inq_onnx.data import Samples
from inq_onnx.runtime import providers_for, session
from inq_onnx.train.losses import LossKind, ResolvedLoss


def epoch_order(samples: int, seed: int, step: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, step, epoch]).permutation(samples)


def batch_count(samples: int, batch_size: int) -> int:
    """Full batches only: the training graph is pinned to one batch size."""
    return samples // batch_size


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
        if loss.kind is not LossKind.CROSS_ENTROPY:
            self.teacher = session(teacher_model, threads=threads or 0, providers=providers_for(provider))
            self.teacher_index = [o.name for o in self.teacher.get_outputs()].index(loss.output)

    def batches(self, batch_size: int, seed: int, step: int, epoch: int, start: int = 0) -> Iterator[tuple[int, list]]:
        order = epoch_order(len(self.samples), seed, step, epoch)
        for b in range(start, batch_count(len(self.samples), batch_size)):
            yield b, self.feeds(np.sort(order[b * batch_size:(b + 1) * batch_size]))

    def feeds(self, index: np.ndarray) -> list[np.ndarray]:
        model_feeds = self.samples.take(index)
        extra = self.extra(index, model_feeds)
        return [model_feeds[name] if name in model_feeds else extra for name in self.step_inputs]

    def extra(self, index: np.ndarray, model_feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.teacher is None:
            return self.samples.labels[index].astype(np.int64)
        return self.teacher.run(None, {**model_feeds, **self.pins})[self.teacher_index]
