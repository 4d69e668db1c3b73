"""ONNX Runtime inference sessions, quiet: its INFO/WARNING lines never reach our users."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

import onnxruntime as ort

from inq_onnx.errors import VerificationError
from inq_onnx.graph.readers import for_runtime, lowered_path, onnx_runtime

ORT_ERROR_SEVERITY = 4  # 0 verbose .. 4 fatal: we report errors ourselves
ort.set_default_logger_severity(ORT_ERROR_SEVERITY)
logging.getLogger("onnxruntime").setLevel(logging.ERROR)


def session(model: onnx.ModelProto | str, *, threads: int = 0, providers=("CPUExecutionProvider",)) -> ort.InferenceSession:
    """An InferenceSession on a model (in memory or a path), logging errors only. A model of an
    IR version newer than ONNX Runtime reads is loaded lowered, when nothing in it needs that version."""
    options = ort.SessionOptions()
    options.log_severity_level = ORT_ERROR_SEVERITY
    if threads:
        options.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        return open_session(for_runtime(model).SerializeToString(), options, providers)
    with lowered_path(Path(model), onnx_runtime()) as path:
        return open_session(str(path), options, providers)


def open_session(source: bytes | str, options: ort.SessionOptions, providers) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as e:  # ORT raises its own untyped Fail/InvalidGraph/... errors
        raise VerificationError(f"ONNX Runtime cannot load the model: {first_line(e)}",
                                "report it with the model attached, or run with --no-verify to skip this check") from e


def providers_for(provider: str) -> tuple[str, ...]:
    """The provider asked for, with the CPU as fallback for the ops it lacks."""
    return (provider,) if provider == "CPUExecutionProvider" else (provider, "CPUExecutionProvider")


def training_device(provider: str) -> str:
    """onnxruntime-training's device name for an execution provider ("cuda" for CUDA)."""
    return {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}.get(provider, "cpu")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(None, feeds)
