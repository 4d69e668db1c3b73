"""`inq-onnx quantize`: one-shot rounding, or full INQ with retraining when --data is given."""

from __future__ import annotations

import json

import click

from inq_onnx.bias_correction import BiasCorrection
from inq_onnx.feedback import Rounding
from inq_onnx.codebook import MAX_BITS, MIN_BITS
from inq_onnx.codebook_range import RangeRule
from inq_onnx.errors import InvalidOptionError
from inq_onnx.incremental import InqOptions
from inq_onnx.jobs import inq_file, quantize_file
from inq_onnx.options import QuantizeOptions
from inq_onnx_cli.common import verbosity, verbosity_options
from inq_onnx_cli.inq_options import parse_pins, parse_schedule_option, schedule_options, train_options, training_options
from inq_onnx_cli.progress import Progress
from inq_onnx_cli.render import print_inq_job, print_quantize_job


@click.command("quantize")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-b", "--bits", type=click.IntRange(MIN_BITS, MAX_BITS), default=4, show_default=True,
              help="Bit-width b: weights become 0 or ±2^k with 2^(b-2) exponents per sign.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Output file [default: MODEL.inq<bits>.onnx].")
@click.option("--per-channel", is_flag=True, help="One codebook per output channel (beyond the paper).")
@click.option("--range", "range_rule", type=click.Choice([r.value for r in RangeRule]),
              default=QuantizeOptions().range.value, show_default=True,
              help="How each codebook's top 2^n1 is chosen: from max|w| (paper), or by least squared (mse) or absolute "
                   "(mae) rounding error, outliers clamped. auto: mse at 2 bits and at 3 bits per tensor, else paper.")
@click.option("--bias-correction", type=click.Choice([c.value for c in BiasCorrection]), default="auto", show_default=True,
              help="Move each layer's bias by the mean output shift its rounding causes, measured on up to 256 "
                   "samples (one-shot: --val; full INQ: --data, after each step). auto: one-shot, where n1 is the paper's.")
@click.option("--rounding", type=click.Choice([r.value for r in Rounding]), default=QuantizeOptions().rounding.value,
              show_default=True,
              help="Full INQ: how each step's newly frozen weights are rounded. feedback: the float weights of the same "
                   "layer absorb the rounding error, measured on up to 64 --data samples (GPTQ's update); nearest: "
                   "each to its nearest power of two, as the paper.")
@click.option("--include", multiple=True, metavar="PATTERN", help="Also quantize these tensors (name or glob).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Never quantize these tensors (name or glob).")
@click.option("--min-size", type=click.IntRange(min=0), default=0, show_default=True, help="Skip tensors with fewer values.")
@click.option("--data", type=click.Path(path_type=str), multiple=True,
              help="Training samples (.npz or folder of .npy, one array per input + optional labels): full INQ with "
                   "retraining. With several --pin values: once for all, or once per value in the same order.")
@click.option("--val", type=click.Path(path_type=str), multiple=True,
              help="Validation samples: accuracy/fidelity after each step (like --data: one per pinned value, or one).")
@schedule_options
@training_options
@click.option("--compact", is_flag=True, help="Write the compact form directly: b bits per weight on disk (see `export`).")
@click.option("--no-verify", is_flag=True, help="Skip the checks after writing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbosity_options
@click.pass_context
def quantize_command(ctx, model, bits, output, per_channel, range_rule, bias_correction, rounding, include, exclude, min_size,
                     data, val, compact, no_verify, as_json, **kw):
    """Turn the weights of MODEL into powers of two or zero.

    Without --data: one-shot rounding, no data needed. With --data: full INQ (partition,
    quantize, retrain the rest, repeat); killed halfway, the same command resumes.

    \b
    Examples:
      inq-onnx quantize model.onnx --bits 4 -o model.inq4.onnx
      inq-onnx quantize model.onnx --bits 4 --data train.npz --val val.npz -o model.inq4.onnx
      inq-onnx quantize model.onnx --bits 3 --data unlabeled.npz --loss distill
      inq-onnx quantize vad.onnx --bits 4 --pin sr=16000,8000 --data d16k.npz --data d8k.npz
    """
    options = QuantizeOptions(bits=bits, per_channel=per_channel, include=include, exclude=exclude, min_size=min_size,
                              range=range_rule, bias_correction=bias_correction, rounding=rounding)
    quiet = as_json or verbosity(ctx) < 0
    if not data:
        pins = parse_pins(kw["pin"])
        extra = ("--teacher" if kw["teacher"] else "several --val files" if len(val) > 1 else
                 "several --pin values" if any(isinstance(v, list) for v in pins.values()) else None)
        if extra:
            raise InvalidOptionError(f"{extra}: only used when retraining (with --data)",
                                     "add --data (one per pinned value, or one for all), or quantize one shot without it")
        job = quantize_file(model, output, options, check=not no_verify, samples_path=val[0] if val else None,
                            compact=compact, pins=pins)
        if as_json:
            click.echo(json.dumps(job_dict(job), indent=1, default=str))
        elif not quiet:
            print_quantize_job(job, verbose=verbosity(ctx) > 0)
        return
    inq = InqOptions(options, schedule=parse_schedule_option(kw["schedule"]), strategy=kw["partition"], seed=kw["seed"])
    progress = Progress(enabled=not quiet)
    try:
        job = inq_file(model, output, inq, train_options(kw), data=data, val=val or None, teacher=kw["teacher"],
                       run_dir=kw["run_dir"], check=not no_verify, compact=compact, on_event=progress)
    finally:
        progress.close()  # an error message must not land on the progress bar's line
    if as_json:
        click.echo(json.dumps({"output": str(job.output), "sidecar": str(job.sidecar), "run_dir": str(job.run_dir),
                               "steps": job.records}, indent=1, default=str))
    elif not quiet:
        print_inq_job(job)


def job_dict(job) -> dict:
    out = {"output": str(job.output), "input_bytes": job.input_bytes, "output_bytes": job.output_bytes}
    out.update(job.result.as_dict())
    if job.verification is not None:
        out["verification"] = {"tensors_in_codebook": job.verification.checked_tensors,
                               "run_shapes": job.verification.run_shapes,
                               "ran_on_samples": job.verification.ran_on_samples,
                               "fidelity": job.verification.fidelity.__dict__ if job.verification.fidelity else None}
    return out
