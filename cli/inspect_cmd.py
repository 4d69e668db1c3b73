"""`inq-onnx inspect`: which weights would be quantized, which skipped and why."""

from __future__ import annotations

import json

import click

from inq_onnx_cli.common import verbosity, verbosity_options

from inq_onnx.graph.io import load_model
from inq_onnx.graph.weights import select_weights
from inq_onnx.report import format_table
from inq_onnx.train.rewrites.gradient_support import GradientStatus, training_report


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--include", multiple=True, metavar="PATTERN", help="Also quantize these tensors (name or glob).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Never quantize these tensors (name or glob).")
@click.option("--min-size", type=click.IntRange(min=0), default=0, help="Skip tensors with fewer values.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@verbosity_options
def inspect_command(model, include, exclude, min_size, as_json):
    """List the weights of MODEL that quantize would touch, and every skipped tensor with its reason.

    \b
    Example:
      inq-onnx inspect model.onnx --exclude 'model.22.*'
    """
    loaded, _ = load_model(model)
    found = select_weights(loaded, include=include, exclude=exclude, min_size=min_size)
    training = training_report(loaded)
    if as_json:
        weights = [{"name": c.name, "shape": c.shape, "dtype": c.dtype, "selected": c.selected,
                    "skip_reason": c.skip_reason, "channel_axes": c.channel_axes, "uses": c.uses, "notes": c.notes}
                   for c in found]
        click.echo(json.dumps({"weights": weights, "gradient_path": [op.to_json() for op in training]}, indent=1))
        return
    chosen = [c for c in found if c.selected]
    rows = [[c.name, "x".join(map(str, c.shape)), c.dtype, "axes " + ",".join(map(str, c.channel_axes))
             if c.channel_axes else "tensor only", c.uses[0] + (f" (+{len(c.uses) - 1})" if len(c.uses) > 1 else "")]
            for c in chosen]
    click.echo(format_table(rows, ["weight", "shape", "dtype", "per-channel", "used by"]))
    click.echo(f"\n{len(chosen)} weights ({sum(c.size for c in chosen):,} values) would be quantized.")
    skipped = [c for c in found if not c.selected]
    if skipped:
        click.echo(f"{len(skipped)} tensors are skipped:")
        for c in skipped:
            click.echo(f"  {c.name}: {c.skip_reason}")
    for c in chosen:
        for note in c.notes:
            click.echo(f"note: {c.name}: {note}")
    if not training:
        return
    click.echo("\nretraining (quantize --data), per op type between the weights and the outputs:")
    for op in training:
        click.echo(f"  {op.describe()}")
    if any(op.status is GradientStatus.BLOCKS for op in training):
        click.echo("full INQ with --data is refused until every op above trains; one-shot quantization works.")
