"""The `inq-onnx` entry point: run the command group; every failure is one line on stderr.

The library is imported inside ``main``: ``import inq_onnx`` refuses to load without an ONNX
Runtime (or with two), and that refusal must be a one-line error like any other.
"""

from __future__ import annotations

import re
import sys
import traceback

import click

EXIT_INTERNAL, EXIT_INTERRUPTED = 3, 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure is one line on stderr and a non-zero exit code."""
    verbose = any(a in ("-vv", "-vvv") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        from inq_onnx_cli.app import cli
    except ImportError as e:  # no ONNX Runtime, two of them, or a dependency missing
        if verbose:
            traceback.print_exc()
        fix = "" if "To fix this" in str(e) else ". To fix this, reinstall inq-onnx with pip so that its dependencies are installed"
        click.echo(f"error: {one_line(str(e))}{fix}", err=True)
        return 1
    from inq_onnx.errors import InqError

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
