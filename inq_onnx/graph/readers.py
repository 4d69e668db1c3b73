"""Hand models to readers that know an older IR version: ONNX Runtime and onnx.checker.

ONNX Runtime's training build (1.19.2) loads IR 10 at most, and onnx 1.17's checker checks IR
10 at most. A model of a newer IR version that uses nothing the newer versions added is handed
to them as a lowered copy (``ir_lowering``), for that session or check only: the files written
keep the input's IR version. A model that uses something newer is refused in one line.
"""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from inq_onnx.errors import ModelSaveError, UnsupportedModelError
from inq_onnx.graph.ir_lowering import lower_ir, why_not_lowerable


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest IR version and default-domain opset the installed ONNX Runtime loads."""

    version: str
    ir_version: int
    opset: int


# ONNX Runtime 1.19.2, the oldest we support, loads these; newer releases load more.
OLDEST_IR_VERSION, OLDEST_OPSET = 10, 21


@functools.cache
def runtime_limits() -> RuntimeLimits:
    """Measured, not looked up: the highest IR version and opset at which the installed ONNX
    Runtime accepts an empty model (a few millisecond probes, once per process)."""
    import onnxruntime

    def loads(ir_version: int, opset: int) -> bool:
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        probe = onnx.helper.make_model(onnx.helper.make_graph([], "probe", [x], [x]),
                                       opset_imports=[onnx.helper.make_opsetid("", opset)])
        probe.ir_version = ir_version
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4
        try:
            onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - ORT's own error types: any refusal means "not loadable"
            return False
        return True

    ir_version, opset = OLDEST_IR_VERSION, OLDEST_OPSET
    while ir_version < OLDEST_IR_VERSION + 50 and loads(ir_version + 1, OLDEST_OPSET):  # bounded, whatever ORT does
        ir_version += 1
    while opset < OLDEST_OPSET + 50 and loads(OLDEST_IR_VERSION, opset + 1):
        opset += 1
    return RuntimeLimits(onnxruntime.__version__, ir_version, opset)


@dataclass(frozen=True)
class Reader:
    """Who reads models: its name, the package that gives it, the newest IR version it reads."""

    name: str
    package: str
    ir_version: int
    verb: str = "loads"


def onnx_runtime() -> Reader:
    limits = runtime_limits()
    return Reader(f"ONNX Runtime {limits.version}", "onnxruntime", limits.ir_version)


def onnx_checker() -> Reader:
    return Reader(f"onnx {onnx.__version__}", "onnx", onnx.IR_VERSION, "checks")


def ir_refusal(model: onnx.ModelProto, reader: Reader, label: str) -> UnsupportedModelError | None:
    """The error for a model ``reader`` cannot read even lowered; None when it can."""
    reason = why_not_lowerable(model, reader.ir_version)
    if not reason:
        return None
    return UnsupportedModelError(
        f"{label} has IR version {model.ir_version}; the installed {reader.name} {reader.verb} at most IR version "
        f"{reader.ir_version}, and {reason}",
        f"install a newer {reader.package}, or remove what IR version "
        f"{reader.ir_version} lacks, set model.ir_version = {reader.ir_version} and save the model again")


def lowered_for(model: onnx.ModelProto, reader: Reader, label: str = "the model") -> onnx.ModelProto:
    """``model`` itself when ``reader`` reads its IR version, else a copy lowered to the newest it reads."""
    lowering = lower_ir(model, reader.ir_version)
    if lowering.model is None:
        raise ir_refusal(model, reader, label)
    return lowering.model


def for_runtime(model: onnx.ModelProto, label: str = "the model") -> onnx.ModelProto:
    """``model`` as the installed ONNX Runtime loads it (itself, or a lowered copy)."""
    return lowered_for(model, onnx_runtime(), label)


@contextmanager
def lowered_path(path: Path, reader: Reader, ir_version: int | None = None) -> Iterator[Path]:
    """``path`` itself when ``reader`` reads its IR version (``ir_version``, when the caller
    knows it), else a lowered copy in a temporary file, removed afterwards. Readers look for
    external data beside the model file (and refuse links), so the copy of a model with external
    data is a hidden file beside it that refers to the same data: no tensor is read or copied."""
    if ir_version is not None and ir_version <= reader.ir_version:
        yield path
        return
    try:
        header = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError):  # not ours to report: the reader says what is wrong with the file
        header = None
    if header is None or header.ir_version <= reader.ir_version:
        yield path
        return
    lowered = lowered_for(header, reader, str(path))
    folder = path.parent if uses_external_data(lowered) else None
    try:
        handle, staged = tempfile.mkstemp(prefix=f".{path.name}.lowered-", suffix=".onnx", dir=folder)
    except OSError as e:
        raise ModelSaveError(f"{path} has IR version {header.ir_version}, which the installed {reader.name} reads "
                             f"only lowered, and a lowered copy cannot be written beside it ({e.strerror or e})",
                             f"make its folder writable, or set model.ir_version = {reader.ir_version} and save it "
                             "again") from e
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(lowered.SerializeToString())
        yield Path(staged)
    finally:
        os.unlink(staged)


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(model))


def check_with_onnx(model: onnx.ModelProto | Path, label: str = "the model", ir_version: int | None = None) -> None:
    """onnx.checker on ``model`` (a path lets it find external data and models over 2 GB; its
    ``ir_version`` saves reading it), lowered to the IR version the installed onnx checks when
    newer. Raises what onnx.checker raises, or UnsupportedModelError when it cannot be lowered."""
    if isinstance(model, Path):
        with lowered_path(model, onnx_checker(), ir_version) as path:
            onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(lowered_for(model, onnx_checker(), label))
