"""The one place that imports ``onnxruntime.training``, and imports it without torch.

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
            f"onnxruntime training support could not be imported ({error})",
            "install onnxruntime-training-cpu==1.19.2 (and not the plain onnxruntime package beside it)",
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


def session_options(threads: int | None = None) -> Any:
    """SessionOptions with ``threads`` intra-op threads (None: ORT's default) and quiet logs."""
    options = load_training_api().SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options
