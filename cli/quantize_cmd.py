"""`inq-onnx quantize`: one-shot rounding, or full INQ with retraining when --data is given."""

from __future__ import annotations

import json

import click

from inq_onnx.codebook import MAX_BITS, MIN_BITS
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
@click.option("--include", multiple=True, metavar="PATTERN", help="Also quantize these tensors (name or glob).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Never quantize these tensors (name or glob).")
@click.option("--min-size", type=click.IntRange(min=0), default=0, show_default=True, help="Skip tensors with fewer values.")
@click.option("--data", type=click.Path(path_type=str),
              help="Training samples (.npz or folder of .npy, one array per input + optional labels): full INQ with retraining.")
@click.option("--val", type=click.Path(path_type=str), help="Validation samples: accuracy/fidelity after each step.")
@schedule_options
@training_options
@click.option("--compact", is_flag=True, help="Write the compact form directly: b bits per weight on disk (see `export`).")
@click.option("--no-verify", is_flag=True, help="Skip the checks after writing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbosity_options
@click.pass_context
def quantize_command(ctx, model, bits, output, per_channel, include, exclude, min_size, data, val, compact,
                     no_verify, as_json, **kw):
    """Turn the weights of MODEL into powers of two or zero.

    Without --data: one-shot rounding, no data needed. With --data: full INQ (partition,
    quantize, retrain the rest, repeat); killed halfway, the same command resumes.

    \b
    Examples:
      inq-onnx quantize model.onnx --bits 4 -o model.inq4.onnx
      inq-onnx quantize model.onnx --bits 4 --data train.npz --val val.npz -o model.inq4.onnx
      inq-onnx quantize model.onnx --bits 3 --data unlabeled.npz --loss distill
    """
    options = QuantizeOptions(bits=bits, per_channel=per_channel, include=include, exclude=exclude, min_size=min_size)
    quiet = as_json or verbosity(ctx) < 0
    if data is None:
        job = quantize_file(model, output, options, check=not no_verify, samples_path=val, compact=compact,
                            pins=parse_pins(kw["pin"]))
        if as_json:
            click.echo(json.dumps(job_dict(job), indent=1, default=str))
        elif not quiet:
            print_quantize_job(job, verbose=verbosity(ctx) > 0)
        return
    inq = InqOptions(options, schedule=parse_schedule_option(kw["schedule"]), strategy=kw["partition"], seed=kw["seed"])
    progress = Progress(enabled=not quiet)
    try:
        job = inq_file(model, output, inq, train_options(kw), data=data, val=val, run_dir=kw["run_dir"],
                       check=not no_verify, compact=compact, on_event=progress)
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
