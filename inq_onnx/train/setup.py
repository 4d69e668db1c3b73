"""Everything a retraining run builds once: the trainable copy of the graph, ORT training
artifacts, the session, the parameter map and the batch feeder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from inq_onnx.data import Samples, branch_label, input_specs, pin_combinations, pinned_values
from inq_onnx.errors import DataError, TrainingError
from inq_onnx.incremental import quantize_options_of, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.runtime import training_device
from inq_onnx.sidecar import Sidecar
from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.distill_tensors import auto_tensors, check_teacher_has
from inq_onnx.train.feeder import Feeder, batch_count, with_outputs
from inq_onnx.runtime import first_line, session
from inq_onnx.train.losses import DistillTerm, LossKind, LossSpec, float_outputs, resolve_loss
from inq_onnx.train.options import DistillTensors, LossChoice, TrainOptions
from inq_onnx.train.params import ParamMap, param_map, trainable_tensors
from inq_onnx.train.rewrites.gradient_support import blocking, gradient_report
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


DEFAULT_DISTILL = DistillTensors.OUTPUTS  # what --loss distill matches when --distill-tensors is not given


def distill_tensor_names(options: TrainOptions, kind: LossKind, model: onnx.ModelProto,
                         training: onnx.ModelProto) -> tuple[str, ...]:
    """The tensors whose MSE to the float teacher joins the loss (the loss output among them
    is its own term): every float output, plus auto-picked or named intermediate tensors."""
    choice = options.distill_tensors
    if choice is None:
        choice = DistillTensors.NONE if kind is LossKind.CROSS_ENTROPY else DEFAULT_DISTILL
    if choice is DistillTensors.NONE:
        return ()
    outputs = [v.name for v in float_outputs(model)]
    if choice is DistillTensors.OUTPUTS:
        return tuple(outputs)
    names = auto_tensors(training, model) if choice is DistillTensors.AUTO else list(choice)
    check_teacher_has(model, tuple(names))
    return tuple(dict.fromkeys(outputs + names))


def loss_spec(options: TrainOptions, train: Samples, model: onnx.ModelProto, pins: dict,
              training: onnx.ModelProto | None = None) -> LossSpec:
    """The loss for ``training`` (the copy ORT trains, default ``model``), with ``model`` as the
    float teacher; every MSE term divided by the teacher's mean square of its tensor."""
    training = model if training is None else training
    choice = options.loss
    if choice is LossChoice.AUTO:
        choice = LossChoice.CROSS_ENTROPY if train.labels is not None else LossChoice.DISTILL_MSE
    if choice is LossChoice.CROSS_ENTROPY and train.labels is None:
        raise DataError(f"{train.source} has no 'labels' for the cross-entropy loss",
                        "add labels to the data, or use --loss distill (no labels needed)")
    kind = LOSS_KINDS[choice]
    tensors = distill_tensor_names(options, kind, model, training)
    spec = LossSpec(kind=kind, output=options.loss_output, temperature=options.temperature,
                    class_axis=options.class_axis)
    output = resolve_loss(training, spec).output
    needed = tuple(dict.fromkeys(((output,) if kind is LossKind.MSE else ()) + tensors))
    scales = teacher_mean_squares(model, train, needed, pins)
    return replace(spec, scale=scales.get(output, 1.0), distill=tuple(DistillTerm(t, scales[t]) for t in tensors))


def teacher_mean_squares(model: onnx.ModelProto, train: Samples, names: tuple[str, ...], pins: dict,
                         samples: int = 64) -> dict[str, float]:
    """The float model's mean square of each tensor on a few samples: dividing a distillation
    MSE by it makes that term (1 / SQNR) and so the learning rate independent of its units."""
    if not names:
        return {}
    teacher = session(with_outputs(model, names))
    values = [teacher.run(list(names), {**feeds, **pins}) for feeds in train.batches(16, samples)]
    squares = {}
    for k, name in enumerate(names):
        flat = np.concatenate([np.ravel(v[k]) for v in values]).astype(np.float64)
        mean_square = float(np.mean(flat**2)) if flat.size else 0.0
        squares[name] = mean_square if np.isfinite(mean_square) and mean_square > 0 else 1.0
    return squares


def teacher_mean_square(model: onnx.ModelProto, train: Samples, output: str, pins: dict, samples: int = 64) -> float:
    """The float model's mean square of ``output`` on a few samples (see teacher_mean_squares)."""
    return teacher_mean_squares(model, train, (output,), pins, samples)[output]


def training_shapes(model: onnx.ModelProto, train: Samples, batch: int, pins) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in input_specs(model):
        if spec.name in pins:
            continue
        per_sample = list(train.inputs[spec.name].shape[1:])
        shapes[spec.name] = tuple(per_sample[:spec.sample_axis] + [batch] + per_sample[spec.sample_axis:])
    return shapes


def check_trainable_ops(prepared: onnx.ModelProto, original: onnx.ModelProto | None = None) -> None:
    """Name, before ORT is asked, every op left on the gradient path that it cannot differentiate.

    The message gives each op type on the path of ``original`` (the user's graph, when given):
    trains, trains through a rewrite (which), or blocks training, with a way out.
    """
    report = gradient_report(original if original is not None else prepared, prepared)
    stuck = blocking(report)
    if stuck:
        others = [entry.describe() for entry in report if entry not in stuck]
        listed = "; ".join(entry.describe(way_out=False) for entry in stuck) + (f"; other ops: {', '.join(others)}" if others else "")
        fixes = [f"for {entry.op}, {entry.way_out}" for entry in stuck]
        raise TrainingError(
            f"ONNX Runtime 1.19.2 cannot train through {', '.join(e.op for e in stuck)} ({listed})", "; ".join(fixes))


def build_setups(model: onnx.ModelProto, trains: list[Samples], sidecar: Sidecar, options: TrainOptions,
                 run_dir: Path, teacher: onnx.ModelProto | None = None) -> list[TrainingSetup]:
    """One training copy per combination of pinned values (``--pin sr=16000,8000``: both If
    branches), each with its own samples; a single one keeps its artifacts in ``artifacts/``."""
    combos = pin_combinations(options.pins)
    folders = ["artifacts"] if len(combos) == 1 else [f"artifacts/{i}" for i in range(len(combos))]
    return [build_setup(model, train, sidecar, options, run_dir / folder, pins=combo, teacher=teacher)
            for combo, train, folder in zip(combos, trains, folders)]


def build_setup(model: onnx.ModelProto, train: Samples, sidecar: Sidecar, options: TrainOptions,
                folder: Path, *, pins: dict | None = None, teacher: onnx.ModelProto | None = None) -> TrainingSetup:
    """The training copy of ``model`` with ``pins`` (default: ``options.pins``) folded in;
    distillation and its loss scale use ``teacher`` (default: ``model``)."""
    pins = pinned_values(model, options.pins if pins is None else pins)
    teacher = model if teacher is None else teacher
    batch = options.batch_for(len(train))
    prepared, passes = prepare_for_training(model, input_shapes=training_shapes(model, train, batch, pins), pins=pins)
    check_trainable_ops(prepared, model)
    sites, keys = trainable_tensors(model, prepared, sidecar,
                                    weight_sites(model, QuantizeOptions(**quantize_options_of(sidecar))))
    if not keys:
        raise TrainingError("no quantized weight is trainable in the training graph",
                            "check `inq-onnx inspect` and the rewrites; or quantize one shot without --data")
    artifacts = build_artifacts(prepared, trainable=list(sites), folder=folder,
                                loss=loss_spec(options, train, teacher, pins, prepared))
    session = TrainingSession(artifacts, threads=options.threads, device=training_device(options.provider))
    pmap = param_map(session.order, sites, keys, model)
    feeder = Feeder(train, artifacts.loss, artifacts.inputs, teacher_model=teacher, pins=pins, threads=options.threads,
                    mixup=options.mixup_for(artifacts.loss.kind is not LossKind.CROSS_ENTROPY),
                    provider=options.provider)
    rewrites = [f"{name}: {result.changed}" for name, result in passes if result.changed]
    return TrainingSetup(session, pmap, feeder, batch, rewrites)


def check_fits(model: onnx.ModelProto, samples: Samples, pins: dict) -> None:
    """Samples for a pinned branch must run through the model with its pins (silero's 8 kHz
    branch takes 288 samples per call, its 16 kHz one 576)."""
    if not pins or len(samples) == 0:
        return
    teacher = session(model)
    try:
        teacher.run(None, {**samples.take(slice(0, 1)), **pins})
    except Exception as error:  # noqa: BLE001 - ORT raises its own RuntimeError subclasses
        raise DataError(f"{samples.source} does not run through the model with {branch_label(pins)} ({first_line(error)})",
                        "give one --data (and --val) per pinned value, in the same order, with that branch's shapes") from error
