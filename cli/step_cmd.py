"""`inq-onnx step`: one INQ partition-and-quantize step, for retraining in another framework."""

from __future__ import annotations

import click

from inq_onnx.codebook import MAX_BITS, MIN_BITS
from inq_onnx.codebook_range import RangeRule
from inq_onnx.incremental import InqOptions, quantized_share
from inq_onnx.jobs import step_file
from inq_onnx.options import QuantizeOptions
from inq_onnx_cli.common import verbosity, verbosity_options
from inq_onnx_cli.inq_options import parse_schedule_option, schedule_options


@click.command("step")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(path_type=str), help="Output [default: MODEL.step<n>.onnx].")
@click.option("-b", "--bits", type=click.IntRange(MIN_BITS, MAX_BITS), help="Bit-width (first step only; later steps read the sidecar).")
@click.option("--per-channel", is_flag=True, help="One codebook per output channel (first step only).")
@click.option("--range", "range_rule", type=click.Choice([r.value for r in RangeRule]),
              help=f"How n1 is chosen: paper, mse or mae (first step only) [default: {QuantizeOptions().range.value}].")
@click.option("--sidecar", type=click.Path(path_type=str), help="Mask sidecar of MODEL [default: MODEL.inq.safetensors if present].")
@click.option("--data", type=click.Path(path_type=str),
              help="Samples (.npz or folder of .npy): round the new weights by error feedback on up to 64 of them.")
@schedule_options
@verbosity_options
@click.pass_context
def step_command(ctx, model, output, bits, per_channel, range_rule, sidecar, data, schedule, partition, seed):
    """One INQ step without training: grow the masks to the next sigma and round the newly
    frozen weights. Retrain the output in any framework, keeping masked weights fixed (see the
    sidecar format in the README), then run `inq-onnx step` on the retrained model.

    \b
    Examples:
      inq-onnx step model.onnx --bits 4 -o step1.onnx      # writes step1.onnx + step1.inq.safetensors
      inq-onnx step step1.onnx -o step2.onnx               # options come from step1's sidecar
      inq-onnx step model.onnx --bits 4 --data train.npz   # round by error feedback on the samples
    """
    inq = None
    if bits is not None or per_channel or schedule or range_rule:
        rule = {"range": range_rule} if range_rule else {}
        inq = InqOptions(QuantizeOptions(bits=bits or 4, per_channel=per_channel, **rule),
                         schedule=parse_schedule_option(schedule), strategy=partition, seed=seed)
    out, side, state = step_file(model, output, inq, sidecar=sidecar, samples_path=data)
    if verbosity(ctx) >= 0:
        last = state.step == len(state.schedule) - 1
        click.echo(f"step {state.step + 1} of {len(state.schedule)}: sigma {state.schedule[state.step]:g}, "
                   f"{quantized_share(state):.1%} of the weights quantized")
        click.echo(f"wrote {out} and {side.name}" + (
            "; every weight is quantized: export it (`inq-onnx export`)" if last else
            "; retrain it with the mask applied, then run `inq-onnx step` on the result"))
