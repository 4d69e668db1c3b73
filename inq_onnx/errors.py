"""The exceptions inq-onnx raises for problems a user can fix.

Every message is one line that names the problem and ends with how to fix it.
The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class InqError(Exception):
    """Base class of every error inq-onnx reports to a user."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem.rstrip('.! ')}. To fix this, {fix}" if fix else problem)


class InvalidOptionError(InqError):
    """An option value is out of range or inconsistent (bits, schedule, patterns...)."""

    exit_code = 2


class ModelLoadError(InqError):
    """The input is not a readable ONNX model (missing, truncated, not protobuf...)."""


class UnsupportedModelError(InqError):
    """The model is valid ONNX but something in it cannot be handled."""


class ModelSaveError(InqError):
    """The output could not be written (folder missing, not writable, same as input...)."""


class VerificationError(InqError):
    """A written model failed a check (codebook membership, onnx.checker, ONNX Runtime run)."""


class DataError(InqError):
    """Sample data does not fit the model (missing input, wrong shape or dtype, bad labels)."""


class SidecarError(InqError):
    """A mask sidecar is corrupt, or belongs to another model or other options."""


class TrainingError(InqError):
    """Retraining could not be set up or failed (ORT training artifacts, gradients...)."""


class ExportError(InqError):
    """A model cannot be exported in the requested format."""


class Interrupted(InqError):
    """The run was stopped by Ctrl-C (SIGINT); the message says what was kept and how to go on."""

    exit_code = 130
