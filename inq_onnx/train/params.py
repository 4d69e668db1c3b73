"""Which tensors retraining updates, and where each lives: in the training session's flat
parameter buffer, in the user's model, and in the mask sidecar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inq_onnx.graph.tensors import TensorSite, read_tensor, write_tensor
from inq_onnx.graph.weights import select_weights
from inq_onnx.sidecar import Sidecar


@dataclass(frozen=True)
class ParamMap:
    order: tuple[str, ...]  # the training session's parameter order
    shapes: dict[str, tuple[int, ...]]
    sites: dict[str, TensorSite]  # where each lives in the user's model
    mask_keys: dict[str, str]  # weight name -> sidecar key (biases have none)

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for name in self.order:
            size = int(np.prod(self.shapes[name], dtype=np.int64))
            out[name] = (start, start + size)
            start += size
        return out

    @property
    def size(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes.values())

    def flatten(self, values: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(values[n], np.float32).reshape(-1) for n in self.order]) if self.order \
            else np.zeros(0, np.float32)

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {n: flat[a:b].reshape(self.shapes[n]) for n, (a, b) in self.offsets.items()}

    def trainable(self, sidecar: Sidecar) -> np.ndarray:
        """1.0 where a value may move (float weights, biases), 0.0 where it is frozen."""
        parts = [np.ones(int(np.prod(self.shapes[n], dtype=np.int64)), np.float32) if n not in self.mask_keys
                 else (~sidecar.tensors[self.mask_keys[n]].mask).reshape(-1).astype(np.float32) for n in self.order]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def read(self, model: onnx.ModelProto) -> np.ndarray:
        return self.flatten({n: read_tensor(model, self.sites[n]) for n in self.order})

    def write(self, model: onnx.ModelProto, flat: np.ndarray) -> None:
        for name, value in self.unflatten(flat).items():
            write_tensor(model, self.sites[name], value)


def trainable_tensors(model: onnx.ModelProto, prepared: onnx.ModelProto, sidecar: Sidecar,
                      weight_sites: dict[str, TensorSite]) -> tuple[dict[str, TensorSite], dict[str, str]]:
    """Weights under INQ plus biases, restricted to float32 initializers of the training graph."""
    in_training = {i.name for i in prepared.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    sites, keys = {}, {}
    for key, site in weight_sites.items():
        if key in sidecar.tensors and site.name == key and key in in_training:
            sites[key], keys[key] = site, key
    for c in select_weights(model):
        if c.skip_reason and c.skip_reason.startswith("bias ") and c.name in in_training and c.name not in sites:
            sites[c.name] = c.site
    return sites, keys


def param_map(order: tuple[str, ...], sites: dict[str, TensorSite], keys: dict[str, str],
              model: onnx.ModelProto) -> ParamMap:
    shapes = {n: tuple(read_tensor(model, sites[n]).shape) for n in order}
    return ParamMap(order, shapes, {n: sites[n] for n in order}, {n: keys[n] for n in order if n in keys})
