"""Options every command shares."""

from __future__ import annotations

import logging
import sys

import click

LOGGER = "inq_onnx"


def configure_logging(verbosity: int) -> None:
    """Our own logger only: onnxruntime configures the root logger at import."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [logging.StreamHandler(sys.stderr)]
    logger.handlers[0].setFormatter(logging.Formatter("%(message)s"))
    logger.setLevel(level)
    logger.propagate = False


def _set_verbosity(ctx: click.Context, param: click.Parameter, value) -> None:
    if not value:
        return
    obj = ctx.find_root().ensure_object(dict)
    obj["verbosity"] = -1 if param.name == "quiet" else max(obj.get("verbosity", 0), 0) + value
    configure_logging(obj["verbosity"])


def verbosity_options(command):
    """-v/-q, accepted before or after the command name."""
    command = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                           help="Only errors.")(command)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbosity,
                        help="More detail (-vv: debug, and tracebacks).")(command)


def verbosity(ctx: click.Context) -> int:
    return ctx.find_root().ensure_object(dict).get("verbosity", 0)
