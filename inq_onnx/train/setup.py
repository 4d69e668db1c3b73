"""Everything a retraining run builds once: the trainable copy of the graph, ORT training
artifacts, the session, the parameter map and the batch feeder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from inq_onnx.data import Samples, input_specs, pinned_values
from inq_onnx.errors import DataError, TrainingError
from inq_onnx.incremental import quantize_options_of, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.runtime import training_device
from inq_onnx.sidecar import Sidecar
from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.feeder import Feeder, batch_count
from inq_onnx.runtime import session
from inq_onnx.train.losses import LossKind, LossSpec, resolve_loss
from inq_onnx.train.options import LossChoice, TrainOptions
from inq_onnx.train.params import ParamMap, param_map, trainable_tensors
from inq_onnx.train.rewrites.gradient_support import GRADIENT_BLOCKERS, unsupported_gradient_ops
from inq_onnx.train.rewrites.prepare import prepare_for_training
from inq_onnx.train.session import TrainingSession


class LossNotFinite(TrainingError):
    """The training loss became NaN or infinite; the step guard rolls the step back."""


LOSS_KINDS = {LossChoice.CROSS_ENTROPY: LossKind.CROSS_ENTROPY, LossChoice.DISTILL: LossKind.MSE,
              LossChoice.DISTILL_MSE: LossKind.MSE, LossChoice.DISTILL_KL: LossKind.KL}


@dataclass
class TrainingSetup:
    session: TrainingSession
    params: ParamMap
    feeder: Feeder
    batch_size: int
    rewrites: list[str]

    @property
    def batches_per_epoch(self) -> int:
        return batch_count(len(self.feeder.samples), self.batch_size)

    def load(self, params: np.ndarray) -> None:
        self.session.set_flat_parameters(params)

    def step(self, params: np.ndarray, feeds: list[np.ndarray], optimizer) -> float:
        """One forward/backward in ORT, then Eq. 8 by our optimizer on ``params`` (in place).
        A non-finite loss raises LossNotFinite before anything is updated."""
        self.session.reset_grad()
        loss = self.session.train_step(*feeds)
        if not np.isfinite(loss):
            raise LossNotFinite(f"the training loss became {loss}", "lower the learning rate (--lr)")
        optimizer.step(params, self.params.flatten(self.session.gradients()))
        self.session.set_flat_parameters(params)
        return loss


def loss_spec(options: TrainOptions, train: Samples, model: onnx.ModelProto, pins: dict) -> LossSpec:
    choice = options.loss
    if choice is LossChoice.AUTO:
        choice = LossChoice.CROSS_ENTROPY if train.labels is not None else LossChoice.DISTILL_MSE
    if choice is LossChoice.CROSS_ENTROPY and train.labels is None:
        raise DataError(f"{train.source} has no 'labels' for the cross-entropy loss",
                        "add labels to the data, or use --loss distill (no labels needed)")
    spec = LossSpec(kind=LOSS_KINDS[choice], output=options.loss_output, temperature=options.temperature)
    if spec.kind is LossKind.MSE:
        spec = replace(spec, scale=teacher_mean_square(model, train, resolve_loss(model, spec).output, pins))
    return spec


def teacher_mean_square(model: onnx.ModelProto, train: Samples, output: str, pins: dict, samples: int = 64) -> float:
    """The float model's mean squared output on a few samples: dividing the distillation MSE by
    it makes the loss (1 / SQNR) and so the learning rate independent of the output's units."""
    teacher = session(model)
    values = [teacher.run([output], {**feeds, **pins})[0] for feeds in train.batches(16, samples)]
    mean_square = float(np.mean(np.concatenate([np.ravel(v) for v in values]).astype(np.float64) ** 2))
    return mean_square if np.isfinite(mean_square) and mean_square > 0 else 1.0


def training_shapes(model: onnx.ModelProto, train: Samples, batch: int, pins) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in input_specs(model):
        if spec.name in pins:
            continue
        per_sample = list(train.inputs[spec.name].shape[1:])
        shapes[spec.name] = tuple(per_sample[:spec.sample_axis] + [batch] + per_sample[spec.sample_axis:])
    return shapes


def check_trainable_ops(prepared: onnx.ModelProto) -> None:
    """Name, before ORT is asked, every op left on the gradient path that it cannot differentiate."""
    blockers = unsupported_gradient_ops(prepared)
    if blockers:
        reasons = "; ".join(f"{op}: {GRADIENT_BLOCKERS.get(op, 'no gradient')}" for op in blockers)
        fix = ("pin the inputs its conditions read, e.g. --pin sr=16000" if "If" in blockers else
               "exclude the layers with those ops from retraining, or quantize one shot without --data")
        raise TrainingError(f"ONNX Runtime 1.19.2 cannot train through {', '.join(blockers)} ({reasons})", fix)


def build_setup(model: onnx.ModelProto, train: Samples, sidecar: Sidecar, options: TrainOptions,
                run_dir: Path) -> TrainingSetup:
    pins = pinned_values(model, options.pins)
    batch = min(options.batch_size, len(train))
    prepared, passes = prepare_for_training(model, input_shapes=training_shapes(model, train, batch, pins), pins=pins)
    check_trainable_ops(prepared)
    sites, keys = trainable_tensors(model, prepared, sidecar,
                                    weight_sites(model, QuantizeOptions(**quantize_options_of(sidecar))))
    if not keys:
        raise TrainingError("no quantized weight is trainable in the training graph",
                            "check `inq-onnx inspect` and the rewrites; or quantize one shot without --data")
    artifacts = build_artifacts(prepared, trainable=list(sites), folder=run_dir / "artifacts",
                                loss=loss_spec(options, train, model, pins))
    session = TrainingSession(artifacts, threads=options.threads, device=training_device(options.provider))
    pmap = param_map(session.order, sites, keys, model)
    feeder = Feeder(train, artifacts.loss, artifacts.inputs, teacher_model=model, pins=pins, threads=options.threads,
                    provider=options.provider)
    rewrites = [f"{name}: {result.changed}" for name, result in passes if result.changed]
    return TrainingSetup(session, pmap, feeder, batch, rewrites)
