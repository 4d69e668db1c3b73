"""A training Module over built artifacts, with numpy access to parameters and gradients.

Fastest ways to move data (ORT 1.19.2, measured on 320n, 3 M params, see ORT-TRAINING.md §6):

- all parameters, write: one flat float32 buffer, ``Module.copy_buffer_to_parameters``
  (0.8 ms); read: ``copy_parameters_to_buffer`` into an OrtValue that shares a numpy
  array (1 ms). Order: the training model's parameter inputs, ``TrainingSession.order``.
- all gradients, read: ``state.parameters[name].grad`` per tensor (5 ms in all). There is
  no flat gradient API, and gradients cannot be written.
- one parameter: assigning ``state.parameters[name].data`` writes it.
``.data`` and ``.grad`` return numpy *views* of ORT's buffers (measured on 1.19.2): they
change under the next write or step, so this class hands out copies.
Gradients accumulate over train steps until ``reset_grad()``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from inq_onnx.errors import TrainingError
from inq_onnx.train.artifacts import TrainingArtifacts
from inq_onnx.train.ort_training import load_training_api, session_options


def _ort_message(error: Exception) -> str:
    """The part of an ORT error after its C++ location and status code."""
    lines = str(error).strip().splitlines()
    return lines[0].rsplit("] : ", 1)[-1].split(" : ", 1)[-1] if lines else type(error).__name__


class TrainingSession:
    """Forward + backward steps on ``artifacts``; parameters and gradients as numpy."""

    def __init__(self, artifacts: TrainingArtifacts, *, threads: int | None = None, device: str = "cpu"):
        api = load_training_api()
        self.artifacts = artifacts
        try:
            self.state = api.CheckpointState.load_checkpoint(str(artifacts.checkpoint))
            self.module = api.Module(
                str(artifacts.training_model), self.state, str(artifacts.eval_model),
                device=device, session_options=session_options(threads),
            )
        except Exception as error:  # noqa: BLE001 - ORT raises its own RuntimeError subclasses
            raise TrainingError(
                f"ONNX Runtime could not load the training model ({_ort_message(error)})",
                "check unsupported_gradient_ops(model): a gradient op may have no CPU kernel",
            ) from error
        inputs = onnx.load(str(artifacts.training_model), load_external_data=False).graph.input
        wanted = set(artifacts.trainable)
        self.order: tuple[str, ...] = tuple(v.name for v in inputs if v.name in wanted)
        self._buffer = np.empty(self.module.get_parameters_size(True), np.float32)
        self._buffer_value = api.OrtValue.ortvalue_from_numpy(self._buffer)
        self._optimizer = None

    def train_step(self, *inputs: np.ndarray) -> float:
        """Loss of one forward pass in training mode; adds its gradients to the accumulators."""
        return float(self.module.train()(*inputs))

    def eval_step(self, *inputs: np.ndarray) -> float:
        """Loss of one forward pass with the eval model (no gradients)."""
        return float(self.module.eval()(*inputs))

    def reset_grad(self) -> None:
        """Zero the gradient accumulators before the next train step."""
        self.module.lazy_reset_grad()

    def gradients(self) -> dict[str, np.ndarray]:
        """Every trainable tensor's accumulated gradient (copies)."""
        grads = {}
        for name in self.order:
            grad = self.state.parameters[name].grad  # None before the first train step
            grads[name] = np.zeros_like(self.state.parameters[name].data) if grad is None else grad.copy()
        return grads

    def parameters(self) -> dict[str, np.ndarray]:
        """Every trainable tensor's current value (copies)."""
        return {name: self.state.parameters[name].data.copy() for name in self.order}

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Write the given trainable tensors (any subset), each as its stored dtype and shape."""
        for name, value in values.items():
            current = self.state.parameters[name].data
            self.state.parameters[name].data = np.asarray(value, current.dtype).reshape(current.shape)

    def flat_parameters(self) -> np.ndarray:
        """All trainable parameters as one float32 vector in ``order`` (a fresh copy)."""
        self.module._model.copy_parameters_to_buffer(self._buffer_value._ortvalue, True)
        return self._buffer.copy()

    def set_flat_parameters(self, flat: np.ndarray) -> None:
        """Write all trainable parameters from one float32 vector in ``order``."""
        self._buffer[:] = np.asarray(flat, np.float32).reshape(-1)
        self.module.copy_buffer_to_parameters(self._buffer_value._ortvalue, True)

    def adamw_step(self, learning_rate: float | None = None) -> None:
        """One step of the artifacts' own AdamW optimizer on the accumulated gradients."""
        if self._optimizer is None:
            self._optimizer = load_training_api().Optimizer(str(self.artifacts.optimizer_model), self.module)
        if learning_rate is not None:
            self._optimizer.set_learning_rate(learning_rate)
        self._optimizer.step()
