"""Shared test helpers: where ../shared is, and tiny models built inline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MODELS = SHARED / "models"
FIXTURE = REPO / "fixtures" / "digits_cnn.onnx"


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real-model tests need the project's ../shared folder")
    return path


def float_models() -> list[str]:
    if not SHARED_MODELS.is_dir():
        return []
    return sorted(p.name for p in SHARED_MODELS.glob("*.onnx"))


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def tensor(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def conv_gemm_model(seed: int = 0, dtype=np.float32) -> onnx.ModelProto:
    """x[N,2,5,5] -> Conv(W[3,2,3,3], B) -> Relu -> Flatten -> Gemm(fc[4,27] transB) -> y[N,4]."""
    rng = np.random.default_rng(seed)
    f = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [tensor("conv.w", rng.normal(size=(3, 2, 3, 3)).astype(dtype)), tensor("conv.b", rng.normal(size=3).astype(dtype)),
             tensor("fc.w", rng.normal(size=(4, 27)).astype(dtype)), tensor("fc.b", rng.normal(size=4).astype(dtype))]
    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return make_model(nodes, [helper.make_tensor_value_info("x", f, ["N", 2, 5, 5])],
                      [helper.make_tensor_value_info("y", f, ["N", 4])], inits)


# Test modules that run ONNX Runtime's training API (artifacts, training sessions, full INQ runs).
# Without the training build (Python >= 3.12, or the plain onnxruntime package: `make test-latest`)
# they are skipped with the reason; everything else must pass on any onnxruntime.
NEEDS_TRAINING = {"tests/train/" + name for name in (
    "test_artifacts.py", "test_killed_runs.py", "test_loop.py", "test_loss_blocks.py", "test_ort_training.py",
    "test_real_models.py", "test_session.py", "test_branches.py", "test_step_guard.py",
    "test_rewrites_write_back.py")} | {"tests/cli/test_lr_output.py"}


def training_build() -> tuple[bool, str]:
    from inq_onnx.errors import TrainingError
    from inq_onnx.train.ort_training import installed_runtime, load_training_api

    try:
        load_training_api()
    except TrainingError:
        return False, (f"needs ONNX Runtime's training build (onnxruntime-training-cpu 1.19.2, Python 3.10/3.11); "
                       f"installed: {installed_runtime()}")
    return True, ""


def pytest_collection_modifyitems(config, items):
    present, reason = training_build()
    if present:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if Path(item.path).relative_to(REPO).as_posix() in NEEDS_TRAINING or item.get_closest_marker("training"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """The zoo fidelity table, when tests/test_zoo.py ran (``make test-slow``)."""
    zoo = sys.modules.get("tests.zoo")
    if zoo is not None and zoo.RESULTS:
        terminalreporter.write_sep("=", "zoo fidelity: quantized vs float model on real inputs")
        terminalreporter.write_line(zoo.format_rows(zoo.RESULTS))
