"""The run log (one JSON line per INQ step, ``log.jsonl`` in the run folder), and what a
Ctrl-C outside the training loop says about the checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

from inq_onnx.errors import Interrupted
from inq_onnx.train.checkpoint import CURRENT

LOG = "log.jsonl"


def append_line(path: Path, line: str) -> None:
    """Append one line; a line torn by a kill is ended first, so that it spoils only itself."""
    with open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode() + b"\n")


def interrupted_outside_training(run_dir: Path) -> Interrupted:
    """Ctrl-C while the run was being set up or its result written (no checkpoint at stake)."""
    if (run_dir / CURRENT).is_file():
        return Interrupted(f"interrupted; the checkpoint in {run_dir} is kept",
                           "run the same command again to resume from it")
    return Interrupted("interrupted before the first checkpoint", "run the same command again to start")


def read_log(run_dir: Path) -> list[dict]:
    """The run log (JSON lines), one record per step: a step logged twice (a kill between its
    record and its checkpoint) keeps its last record; a line torn by a kill is skipped."""
    path = run_dir / LOG
    if not path.exists():
        return []
    records = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            records[int(entry["step"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return [records[k] for k in sorted(records)]
