"""The one place that imports ``onnxruntime.training``, and imports it without torch.

Retraining needs ONNX Runtime's training build (``onnxruntime-training-cpu`` 1.19.2, the last,
Python 3.10/3.11 only); everything else runs on any onnxruntime. Every training entry point
calls :func:`require_training` first, so that without the build it fails in one line, before
writing anything.

``import onnxruntime.training`` runs ``from . import optim``, and ``optim`` needs torch
(onnxruntime issue #22070). Nothing we use lives in ``optim``, so when torch is absent a
stub module takes its place before the import.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

from inq_onnx.errors import TrainingError

_OPTIM = "onnxruntime.training.optim"


@dataclass(frozen=True)
class TrainingApi:
    """What inq-onnx uses from ``onnxruntime.training`` (and the OrtValue that goes with it)."""

    artifacts: types.ModuleType
    onnxblock: types.ModuleType
    CheckpointState: type
    Module: type
    Optimizer: type
    OrtValue: type
    SessionOptions: type
    version: str


def _stub_optim_if_torch_missing() -> bool:
    """Put an empty ``onnxruntime.training.optim`` in ``sys.modules`` unless torch can load it."""
    if _OPTIM in sys.modules or importlib.util.find_spec("torch") is not None:
        return False
    stub = types.ModuleType(_OPTIM)
    stub.__doc__ = "Stub set by inq_onnx: the real module needs torch, which is not installed."
    sys.modules[_OPTIM] = stub
    return True


TRAINING_FIX = ("use Python 3.10 or 3.11 and pip install 'inq-onnx[train]' (onnxruntime-training-cpu 1.19.2; "
                "pip uninstall onnxruntime first, the two must not be installed together); one-shot quantize, "
                "step, export and inspect need no training build")


@functools.cache
def load_training_api() -> TrainingApi:
    """Import the ORT training API once; raise TrainingError with the fix if it is missing."""
    _stub_optim_if_torch_missing()
    try:
        import onnxruntime
        from onnxruntime.training import artifacts, onnxblock
        from onnxruntime.training.api import CheckpointState, Module, Optimizer
    except ImportError as error:
        raise TrainingError(
            f"retraining needs ONNX Runtime's training build, which is not installed ({installed_runtime()}: {error})",
            TRAINING_FIX,
        ) from error
    return TrainingApi(
        artifacts=artifacts,
        onnxblock=onnxblock,
        CheckpointState=CheckpointState,
        Module=Module,
        Optimizer=Optimizer,
        OrtValue=onnxruntime.OrtValue,
        SessionOptions=onnxruntime.SessionOptions,
        version=onnxruntime.__version__,
    )


def require_training() -> None:
    """Raise TrainingError (one line, with what to install) unless the training API imports."""
    load_training_api()


def training_available() -> bool:
    try:
        load_training_api()
    except TrainingError:
        return False
    return True


def installed_runtime() -> str:
    """Which ONNX Runtime package is installed, e.g. "onnxruntime 1.32.0", or "no onnxruntime"."""
    from importlib import metadata

    for name in ("onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime", "onnxruntime-gpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "no onnxruntime"


def session_options(threads: int | None = None) -> Any:
    """SessionOptions with ``threads`` intra-op threads (None: ORT's default) and quiet logs."""
    options = load_training_api().SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options
