"""Every `inq-onnx ...` line in the README names a real command with real options (docs that
run: each is parsed by the CLI itself, without executing it)."""

import re
import shlex
from pathlib import Path

import click
import pytest

from inq_onnx_cli.app import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    lines = []
    for line in README.read_text().splitlines():
        match = re.match(r"\s*(inq-onnx [^#`]*)", line)
        if match and not line.strip().startswith(("|", "`")):
            lines.append(match.group(1).strip())
    return lines


def test_the_readme_shows_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line):
    name, *rest = shlex.split(line)[1:]
    command = cli.get_command(click.Context(cli), name)
    assert command is not None, f"README line '{line}': no command '{name}'"
    try:
        command.make_context(name, rest)
    except click.UsageError as e:
        pytest.fail(f"README line '{line}': {e.format_message()}")
