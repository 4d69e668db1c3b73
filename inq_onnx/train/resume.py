"""A run's first checkpoint, and the checks before one is resumed."""

from __future__ import annotations

from pathlib import Path

import onnx

from inq_onnx.data import Samples
from inq_onnx.errors import SidecarError
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.incremental import InqOptions, check_sidecar, choose_ranges, start
from inq_onnx.report import range_choice_summary
from inq_onnx.sidecar import check_compatible
from inq_onnx.train.checkpoint import Checkpoint, Progress

__all__ = ["first_checkpoint", "check_resumable"]


def first_checkpoint(model: onnx.ModelProto, inq: InqOptions, branches: list[tuple[Samples, dict]],
                     run_options: dict, on_event) -> tuple[Checkpoint, dict | None]:
    """The state before step 1, and what choosing the n1 rules did (for the run log): with
    ``--range auto`` each weight's rule is first judged by the model's outputs on the training
    samples of every branch (its pinned inputs with them)."""
    choice = choose_ranges(model, inq, branches)
    if choice is not None:
        on_event("range_choice", {**choice.as_dict(), "summary": range_choice_summary(choice)})
    sidecar = start(model, inq, choice.rules if choice is not None else None)
    return (Checkpoint(model, sidecar, Progress(trained=True, options=run_options), None),
            choice.as_dict() if choice is not None else None)


def check_resumable(model, ckpt: Checkpoint, inq: InqOptions, run_options: dict, run_dir: Path) -> None:
    check_compatible(ckpt.sidecar, fingerprint=structure_fingerprint(model), bits=inq.quantize.bits,
                     schedule=inq.schedule, strategy=inq.strategy, seed=inq.seed, source=str(run_dir))
    if ckpt.progress.options != run_options:
        changed = sorted(k for k in run_options if run_options[k] != (ckpt.progress.options or {}).get(k))
        raise SidecarError(f"the run in {run_dir} was started with other options ({', '.join(changed)})",
                           f"run with the same options to resume, or delete {run_dir} to start over")
    check_sidecar(ckpt.model, ckpt.sidecar, inq, str(run_dir))
