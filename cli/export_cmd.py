"""`inq-onnx export`: compact (b bits per weight), plain float, or codes for hardware."""

from __future__ import annotations

from pathlib import Path

import click

from inq_onnx.export import ExportFormat, export
from inq_onnx_cli.common import verbosity, verbosity_options
from inq_onnx_cli.render import megabytes


@click.command("export")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-f", "--format", "fmt", type=click.Choice([f.value for f in ExportFormat]), default="compact",
              show_default=True, help="compact: b-bit codes decoded by stock ONNX Runtime; float: plain float model; "
              "codes: int8 codes + manifest for shift-based hardware.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Output file (a folder for codes) [default: beside MODEL].")
@click.option("--allow-float", is_flag=True, help="Keep weights that are not on their codebook float instead of failing.")
@verbosity_options
@click.pass_context
def export_command(ctx, model, fmt, output, allow_float):
    """Write a quantized MODEL in another form.

    \b
    Examples:
      inq-onnx export model.inq4.onnx --format compact -o model.c4.onnx
      inq-onnx export model.c4.onnx --format float -o model.f32.onnx
      inq-onnx export model.inq4.onnx --format codes -o model.codes/
    """
    out = Path(output) if output else default_output(Path(model), fmt)
    result = export(model, fmt, output=out, allow_float=allow_float)
    if verbosity(ctx) < 0:
        return
    for name in result.kept_float:
        click.echo(f"kept float: {name}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if fmt == "codes":
        click.echo(f"wrote {out}/ ({len(result.report.tensors)} tensors: codes.safetensors + manifest.json)")
        return
    click.echo(f"wrote {out}  ({megabytes(size_of(Path(model)))} -> {megabytes(size_of(out))})")


def default_output(model: Path, fmt: str) -> Path:
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.codes" if fmt == "codes" else f"{stem}.{fmt}.onnx")


def size_of(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)
