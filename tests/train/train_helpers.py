"""Tiny inline graphs and ORT runs shared by the train/ tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime
from onnx import numpy_helper

from tests.conftest import SHARED_MODELS as MODELS  # noqa: F401 - re-exported for the slow tests


def model_from_text(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """Parse ONNX text and add ``initializers`` (name -> array) to its main graph."""
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``model`` on ``feeds`` (extra feeds are dropped) with ONNX Runtime."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def max_diff(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between the outputs of two models on the same feeds."""
    pairs = zip(run(a, feeds), run(b, feeds))
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in pairs)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    """Uniform [-1, 1) float32 of ``shape``."""
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def ops(model: onnx.ModelProto) -> list[str]:
    """Op types of the top-level graph, in order."""
    return [n.op_type for n in model.graph.node]


def frozen(model: onnx.ModelProto) -> bytes:
    """Bytes to compare before/after a pass: the pass must not mutate its input."""
    return model.SerializeToString(deterministic=True)


def one_train_step(model: onnx.ModelProto, trainable: list[str], feeds: dict[str, np.ndarray], folder) -> dict:
    """Build artifacts (MSE on the first output, against its value + 0.1), run one training step,
    and return the gradients of ``trainable``."""
    from inq_onnx.train.artifacts import build_artifacts
    from inq_onnx.train.losses import LossSpec
    from inq_onnx.train.session import TrainingSession

    target = (run(model, feeds)[0] + 0.1).astype(np.float32)
    artifacts = build_artifacts(model, trainable=trainable, folder=folder, loss=LossSpec(), timeout_s=120)
    session = TrainingSession(artifacts, threads=1)
    session.reset_grad()
    loss = session.train_step(*[feeds[name] for name in artifacts.inputs if name in feeds], target)
    assert np.isfinite(loss)
    return session.gradients()
