"""File-to-file jobs: what one CLI command does, callable from Python export pipelines."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from inq_onnx.data import Samples, load_samples, pin_combinations, pinned_values
from inq_onnx.errors import InvalidOptionError, VerificationError
from inq_onnx.feedback import Rounding
from inq_onnx.graph.io import (PROTOBUF_LIMIT, ModelWriter, check_writable_target, load_model, load_structure, save_model,
                              tensor_bytes)
from inq_onnx.graph.tensors import proto_values
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantize_model
from inq_onnx.report import QuantizeResult
from inq_onnx.train.losses import class_count
from inq_onnx.verify import VerifyReport, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeJob:
    result: QuantizeResult
    output: Path
    input_bytes: int
    output_bytes: int
    verification: VerifyReport | None


def default_output(path: Path, bits: int) -> Path:
    return path.with_name(f"{path.stem}.inq{bits}.onnx")


def step_output(model_path: Path, step: int) -> Path:
    stem = model_path.stem
    base = stem.rsplit(".step", 1)[0] if stem.rsplit(".step", 1)[-1].isdigit() else stem
    return model_path.with_name(f"{base}.step{step + 1}.onnx")


def step_file(model_path: str | os.PathLike, output: str | os.PathLike | None, inq=None, *,
              sidecar: str | os.PathLike | None = None,
              samples_path: str | os.PathLike | None = None) -> tuple[Path, Path, object]:
    """One INQ partition-and-quantize step, no training: MODEL (+ its sidecar, if any) -> OUTPUT
    and its sidecar. Retrain OUTPUT honouring the mask, then step again. ``inq`` None: the
    options recorded in the sidecar (or the defaults for a first step). With ``samples_path``
    (and rounding by feedback), the new weights are rounded by error feedback on those samples."""
    from inq_onnx.incremental import InqOptions, check_sidecar, options_of, partition_step, start
    from inq_onnx.sidecar import read_sidecar, sidecar_path, write_sidecar

    model, source = load_model(model_path)
    side_in = Path(sidecar) if sidecar else sidecar_path(model_path)
    state = read_sidecar(side_in) if side_in.exists() else None
    inq = inq or (options_of(state) if state else InqOptions(QuantizeOptions()))
    out = Path(output) if output else step_output(Path(model_path), state.step + 1 if state else 0)
    check_writable_target(out, source)
    if state is not None:
        check_sidecar(model, state, inq, str(side_in))
    elif sidecar:
        from inq_onnx.errors import SidecarError
        raise SidecarError(f"the sidecar {side_in} does not exist", "check the path given to --sidecar")
    else:
        state = start(model, inq)
    rounder = None
    if samples_path is not None and inq.quantize.rounding is Rounding.FEEDBACK:  # else the samples are not read
        from inq_onnx.compensation import step_rounder

        rounder = step_rounder(model, state, inq.quantize, load_samples(samples_path, model), seed=inq.seed)
    stepped, new_state = partition_step(model, state, rounder)
    save_model(stepped, out, external_data=source.external_data, source=source, keep_data=False)
    return out, write_sidecar(sidecar_path(out), new_state), new_state


def compact_output(out: Path) -> None:
    """Rewrite a verified quantized output in its compact form (b-bit codes), atomically."""
    from inq_onnx.export.compact import to_compact

    model, source = load_model(out)
    save_model(to_compact(model, in_place=True)[0], out, external_data=source.external_data, keep_data=False)


def quantize_file(model_path: str | os.PathLike, output: str | os.PathLike | None, options: QuantizeOptions, *,
                  check: bool = True, samples_path: str | os.PathLike | None = None,
                  compact: bool = False, pins: dict | None = None) -> QuantizeJob:
    """Load, quantize one-shot, save atomically, then verify (and measure fidelity on samples).

    The loaded model is quantized in place and each new weight is streamed into the output (its
    data file with external data; without samples, the model file itself, ``graph.pieces``);
    verification reads the files written, so the peak memory stays near one copy of the model.
    Without samples, a single-file model is read as its file's bytes (``graph.wire``): each
    weight is a view of them, read once, and what is not quantized is copied to the output as
    it was. ``job.result.model`` is then the written model without the data of the streamed
    weights (``onnx.load(job.output)`` loads it whole).
    """
    # with samples, bias correction writes biases after every weight: not in list order, so not streamed
    stream = samples_path is None
    model, source, stored = load_structure(model_path) if stream else (*load_model(model_path), None)
    out = Path(output) if output else default_output(Path(model_path), options.bits)
    check_writable_target(out, source)
    if len(pin_combinations(pins or {})) > 1:
        raise InvalidOptionError("several pinned values retrain several branches: one-shot takes one",
                                 "retrain with data (inq_file), or pin one value")
    pins = pinned_values(model, pins or {})
    samples: Samples | None = (load_samples(samples_path, model, num_classes=class_count(model), pinned=tuple(pins))
                               if samples_path else None)
    log.info("quantizing %s to %d bits", model_path, options.bits)
    external = source.external_data or (stored is None and tensor_bytes(model) > PROTOBUF_LIMIT)
    with ModelWriter(out, external_data=external, source=source, stream=stream, originals=stored) as writer:
        result = quantize_model(model, options, in_place=True, write=writer.write_tensor, samples=samples, pins=pins,
                                read=stored.values if stored is not None else proto_values,
                                write_blocks=writer.initializer_blocks)
        writer.save(result.model)
    if stored is not None:  # the initializers left as they were hold their data again, as without streaming
        stored.restore(result.model, keep_out=writer.streamed)
        del stored
    if external:  # the model in memory still holds the float weights (protobuf frees nothing): drop it
        del model
        result = replace(result, model=onnx.load(str(out), load_external_data=False))
        gc.collect()  # the weight selection's use index holds it in reference cycles
    try:
        report = verify(out, reference=source.path, samples=samples, pins=pins) if check else None
    except VerificationError:
        discard_output(out)  # a model that failed its checks must not be left looking like a result
        raise
    if compact:
        compact_output(out)
    out_bytes = out.stat().st_size + (Path(f"{out}.data").stat().st_size if Path(f"{out}.data").exists() else 0)
    return QuantizeJob(result, out, source.size_bytes, out_bytes, report)


def discard_output(out: Path) -> None:
    out.unlink(missing_ok=True)
    Path(f"{out}.data").unlink(missing_ok=True)


@dataclass(frozen=True)
class InqJob:
    output: Path
    sidecar: Path
    run_dir: Path
    records: list
    resumed: bool
    verification: VerifyReport | None


def default_run_dir(output: Path) -> Path:
    return output.with_name(output.name + ".inq-run")


def inq_file(model_path: str | os.PathLike, output: str | os.PathLike | None, inq, train_options, *,
             data, val=None, teacher: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
             check: bool = True, compact: bool = False, on_event=lambda kind, info: None) -> InqJob:
    """Full INQ with retraining, resumable: rerunning the same call continues from ``run_dir``.

    With several pinned values (``pins={"sr": [16000, 8000]}``) every branch retrains; ``data``
    and ``val`` are then one path for all branches or a sequence of one per branch, in order.
    ``teacher``: the float model to distil from and validate against (default: the input)."""
    from inq_onnx.data import load_branch_samples
    from inq_onnx.sidecar import sidecar_path, write_sidecar
    from inq_onnx.train.checkpoint import load_checkpoint
    from inq_onnx.train.loop import retrain
    from inq_onnx.train.run_log import interrupted_outside_training
    from inq_onnx.train.ort_training import require_training

    require_training()  # first: without the training build, one line and nothing written
    model, source = load_model(model_path)
    out = Path(output) if output else default_output(Path(model_path), inq.quantize.bits)
    check_writable_target(out, source)
    combos = [pinned_values(model, combo) for combo in pin_combinations(train_options.pins)]
    classes = class_count(model, train_options.loss_output, train_options.class_axis)
    train = load_branch_samples(data, model, combos, option="--data", num_classes=classes)
    val_samples = load_branch_samples(val, model, combos, option="--val", num_classes=classes) if val else None
    teacher_model = load_model(teacher)[0] if teacher else None
    runs = Path(run_dir) if run_dir else default_run_dir(out)
    try:
        result = retrain(model, train, inq=inq, options=train_options, run_dir=runs, val=val_samples,
                         teacher=teacher_model, on_event=on_event)
        save_model(result.model, out, external_data=source.external_data, source=source, keep_data=False)
        side = write_sidecar(sidecar_path(out), load_checkpoint(runs).sidecar)
        run_on = val_samples if val_samples is not None else train
        reports = [verify(out, reference=source.path or model, pins=pins, run_on=samples)
                   for pins, samples in zip(combos, run_on)] if check else [None]
        report = reports[0]
        if compact:
            compact_output(out)
    except KeyboardInterrupt:  # outside the loop's own Ctrl-C handling (set-up, writing the result)
        raise interrupted_outside_training(runs) from None
    return InqJob(out, side, runs, result.records, result.resumed, report)
