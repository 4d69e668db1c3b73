"""`inq-onnx report`: a run's summary table, and a picture of it."""

from __future__ import annotations

from pathlib import Path

import click

from inq_onnx.errors import InqError
from inq_onnx.train.run_log import read_log
from inq_onnx_cli.common import verbosity_options
from inq_onnx_cli.render import run_notes, summary_table


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw accuracy and loss per INQ step into this PNG (needs matplotlib: pip install 'inq-onnx[plot]').")
@verbosity_options
def report_command(run_dir, plot):
    """Summarise a retraining run: accuracy and loss after each INQ step.

    \b
    Example:
      inq-onnx report model.inq4.onnx.inq-run/ --plot run.png
    """
    records = read_log(run_dir)
    if not records:
        raise InqError(f"{run_dir} holds no run log (log.jsonl)", "give the --run-dir of a quantize --data run")
    click.echo(summary_table(records))
    for note in run_notes(records):
        click.echo(note)
    if plot:
        from inq_onnx_cli.plot import plot_run

        plot_run(records, plot)
        click.echo(f"wrote {plot}")
