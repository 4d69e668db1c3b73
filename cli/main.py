"""The `inq-onnx` command: parse, call one library function, print. Errors are one line."""

from __future__ import annotations

import re
import sys
import traceback

import click

from inq_onnx import __version__
from inq_onnx.errors import InqError

from inq_onnx_cli.common import configure_logging, verbosity_options
from inq_onnx_cli.export_cmd import export_command
from inq_onnx_cli.inspect_cmd import inspect_command
from inq_onnx_cli.quantize_cmd import quantize_command
from inq_onnx_cli.report_cmd import report_command
from inq_onnx_cli.step_cmd import step_command

EXIT_INTERNAL, EXIT_INTERRUPTED = 3, 130


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure is one line on stderr and a non-zero exit code."""
    verbose = any(a in ("-vv", "-vvv") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        cli.main(args=argv, prog_name="inq-onnx", standalone_mode=False)
        return 0
    except InqError as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        command = e.ctx.command_path if getattr(e, "ctx", None) else "inq-onnx"
        click.echo(f"error: {one_line(e.format_message()).rstrip('.')}. To fix this, see '{command} --help'", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug of ours: still one line, the traceback only with -vv
        if verbose:
            traceback.print_exc()
        click.echo(f"error: internal error {type(e).__name__}: {one_line(str(e))[:300]} "
                   "(please report it; -vv shows the traceback)", err=True)
        return EXIT_INTERNAL


def one_line(text: str) -> str:
    """Messages quoting other tools (ORT, protobuf) may span lines: the CLI prints one."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


if __name__ == "__main__":
    sys.exit(main())
