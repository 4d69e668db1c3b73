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


MIX_STREAM = 7  # the mixup draws' own random stream, apart from the batch order


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


def mix(samples: Samples, index: np.ndarray, share: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Model feeds for ``index`` where a ``share`` of the samples is mixed with another of the
    batch: x' = l x + (1 - l) x_other, l uniform in [0, 1), the same l for every float input of
    a sample (integer inputs are left as they are). Mixup (Zhang et al. 2018) as distillation
    uses it: the teacher labels the mixture, so a few dozen samples teach the student the
    teacher's function between them too (Beyer et al. 2022, "function matching")."""
    n = len(index)
    other = rng.permutation(n)
    weight = np.where(rng.random(n) < share, rng.random(n), 1.0)
    batch = {}
    for name, values in samples.inputs.items():
        x = values[index]
        if np.issubdtype(x.dtype, np.floating):
            w = weight.reshape(-1, *[1] * (x.ndim - 1)).astype(x.dtype)
            x = w * x + (1 - w) * x[other]
        batch[name] = x
    return Samples(batch, None, samples.source, samples.sample_axes).take(slice(None))  # the model's axis order


class Feeder:
    """Feeds for the training model's inputs, in its order, for one batch of sample indices;
    with ``mixup`` (``--mixup``), training batches mix that share of their samples when the
    teacher gives the targets."""

    def __init__(self, samples: Samples, loss: ResolvedLoss, step_inputs: tuple[str, ...], *,
                 teacher_model: onnx.ModelProto | None, pins: dict[str, np.ndarray], threads: int | None = None,
                 provider: str = "CPUExecutionProvider", mixup: float = 0.0):
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
        self.mixup = mixup if loss.kind is not LossKind.CROSS_ENTROPY and self.teacher is not None else 0.0

    def batches(self, batch_size: int, seed: int, step: int, epoch: int, start: int = 0) -> Iterator[tuple[int, list]]:
        order = epoch_order(len(self.samples), seed, step, epoch)
        for b in range(start, batch_count(len(self.samples), batch_size)):
            rng = np.random.default_rng([seed, step, epoch, b, MIX_STREAM]) if self.mixup else None
            yield b, self.feeds(np.sort(order[b * batch_size:(b + 1) * batch_size]), rng)

    def feeds(self, index: np.ndarray, mix_rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """The step inputs for ``index``; with ``mix_rng`` (training batches) mixed as ``mix`` says."""
        model_feeds = mix(self.samples, index, self.mixup, mix_rng) if mix_rng is not None else self.samples.take(index)
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
