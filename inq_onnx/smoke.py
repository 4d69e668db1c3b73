"""Run a model in ONNX Runtime on real samples or random inputs, in a child process.

ONNX Runtime can kill the whole process on shapes a model was not made for (SIGFPE in the
PP-OCR classifier on 1x1 images), so each try runs in a fresh interpreter. The child prints one
JSON line per stage; a stage that never reports tells the parent where the crash happened.
Samples, when given, come first: a model that one-shot rounding breaks is often one that rejects
random inputs (silero's sample rate, a detector's image size), and it must still be run.

Child usage: ``python -m inq_onnx.smoke MODEL [REFERENCE] --free-dim N [--feeds FEEDS.npz]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from inq_onnx.errors import VerificationError
from inq_onnx.graph.io import save_model

FREE_DIM_CANDIDATES = (1, 32, 640)  # dynamic non-batch dims, tried in turn until the float model runs
TIMEOUT_S = 600


def smoke_run(model: onnx.ModelProto | str | os.PathLike, reference: onnx.ModelProto | str | os.PathLike | None = None,
              pins: dict | None = None,
              feeds: dict[str, np.ndarray] | None = None) -> tuple[dict[str, list[int]], bool]:
    """Input shapes on which the reference ran and ``model`` ran with finite outputs, and whether
    they were ``feeds`` (real samples, with ``pins``: tried first when given) or random inputs.

    Models are in memory (saved to a temporary folder for the child) or paths (read there).

    Returns {} when the reference rejects every candidate (nothing to compare).
    Raises VerificationError when the quantized model fails where the float one runs.
    """
    with tempfile.TemporaryDirectory(prefix="inq-smoke-") as tmp:
        paths = [save(model, Path(tmp) / "model.onnx")]
        if reference is not None:
            paths.append(save(reference, Path(tmp) / "reference.onnx"))
        last = ""
        feeds_path = None
        if feeds:
            feeds_path = Path(tmp) / "feeds.npz"
            np.savez(feeds_path, **feeds)
        for free_dim in ((None,) if feeds_path else ()) + FREE_DIM_CANDIDATES:
            stages, last = run_child(paths, free_dim, pins or {}, feeds_path if free_dim is None else None)
            if reference is not None and "reference" not in stages:
                continue
            if "model" in stages:
                return stages["model"]["shapes"], free_dim is None
            if reference is None:
                continue
            raise VerificationError(f"ONNX Runtime fails to run the quantized model where the float model runs: {last}",
                                    "report it with the model attached; --no-verify skips this check")
    if reference is None:
        tried = "the samples or random inputs" if feeds else "random inputs"
        raise VerificationError(f"ONNX Runtime fails to run the model on {tried}: {last}",
                                "check the model in ONNX Runtime, or pass --no-verify")
    return {}, False


def save(model: onnx.ModelProto | str | os.PathLike, path: Path) -> str:
    """A path the child can read: ``model``'s own, or ``path`` with the in-memory model in it."""
    if not isinstance(model, onnx.ModelProto):
        return str(model)
    return str(save_model(model, path, keep_data=True))  # keeps the caller's model whole


def run_child(paths: list[str], free_dim: int | None, pins: dict,
              feeds: Path | None = None) -> tuple[dict[str, dict], str]:
    pinned = json.dumps({k: np.asarray(v).tolist() for k, v in pins.items()})
    cmd = [sys.executable, "-m", "inq_onnx.smoke", *paths, "--free-dim", str(free_dim or 1), "--pins", pinned]
    if feeds is not None:
        cmd += ["--feeds", str(feeds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    stages = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            stages[record["stage"]] = record
    failure = next((r["error"] for r in stages.values() if "error" in r), "")
    if proc.returncode < 0:
        failure = f"the process was killed by {signal.Signals(-proc.returncode).name}"
    return {k: v for k, v in stages.items() if "error" not in v}, failure


def child(model_path: str, reference_path: str | None, free_dim: int, pins: dict, feeds_path: str | None = None) -> None:
    from inq_onnx.runtime import first_line, session
    from inq_onnx.verify import synthetic_feeds

    model = onnx.load(model_path, load_external_data=False)  # the input specs are enough
    feeds = synthetic_feeds(model, free_dim)
    if feeds_path:
        with np.load(feeds_path) as given:
            feeds.update({k: given[k] for k in given.files if k in feeds})
    feeds.update({k: np.asarray(v, feeds[k].dtype) for k, v in pins.items() if k in feeds})
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    expected = None
    for stage, path in (("reference", reference_path), ("model", model_path)):
        if path is None:
            continue
        try:
            outputs = session(path).run(None, feeds)
        except Exception as e:  # ORT raises untyped errors; report the message to the parent
            print(json.dumps({"stage": stage, "error": first_line(e)}), flush=True)
            return
        if stage == "model" and has_new_nonfinite(outputs, expected):
            print(json.dumps({"stage": stage, "error": "NaN or infinite outputs on a random input"}), flush=True)
            return
        expected = outputs
        print(json.dumps({"stage": stage, "shapes": shapes}), flush=True)


def has_new_nonfinite(outputs: list[np.ndarray], expected: list[np.ndarray] | None) -> bool:
    for i, out in enumerate(outputs):
        ref_ok = expected is None or not np.issubdtype(expected[i].dtype, np.floating) or np.all(np.isfinite(expected[i]))
        if np.issubdtype(out.dtype, np.floating) and not np.all(np.isfinite(out)) and ref_ok:
            return True
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--free-dim", type=int, default=1)
    parser.add_argument("--pins", default="{}")
    parser.add_argument("--feeds")
    args = parser.parse_args()
    child(args.paths[0], args.paths[1] if len(args.paths) > 1 else None, args.free_dim, json.loads(args.pins),
          args.feeds)
