"""The `inq-onnx` command group: its options and its subcommands."""

from __future__ import annotations

import click

from inq_onnx import __version__

from inq_onnx_cli.common import configure_logging, verbosity_options
from inq_onnx_cli.export_cmd import export_command
from inq_onnx_cli.inspect_cmd import inspect_command
from inq_onnx_cli.quantize_cmd import quantize_command
from inq_onnx_cli.report_cmd import report_command
from inq_onnx_cli.step_cmd import step_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inq-onnx")
@verbosity_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Turn ONNX models into models whose weights are powers of two or zero (INQ).

    \b
    Example:
      inq-onnx quantize model.onnx --bits 4 -o model.inq4.onnx
    """
    configure_logging(ctx.ensure_object(dict).setdefault("verbosity", 0))


cli.add_command(quantize_command)
cli.add_command(inspect_command)
cli.add_command(step_command)
cli.add_command(report_command)
cli.add_command(export_command)
