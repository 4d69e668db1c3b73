"""Which tensors retraining updates, and where each lives: in the training session's flat
parameter buffer, in the user's model, and in the mask sidecar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inq_onnx.graph import table
from inq_onnx.graph.tensors import TensorSite, iter_graphs, read_tensor, write_tensor
from inq_onnx.graph.uses import build_use_index
from inq_onnx.graph.weights import terminals
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
    """Weights under INQ plus the biases and normalization parameters that retrain beside them,
    restricted to float32 initializers of the training graph."""
    in_training = {i.name for i in prepared.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    sites, keys = {}, {}
    for key, site in weight_sites.items():
        if key in sidecar.tensors and site.name == key and key in in_training:
            sites[key], keys[key] = site, key
    for name, site in learned_parameters(model).items():
        if name in in_training and name not in sites:
            sites[name] = site
    return sites, keys


WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
NORM_PARAMETERS = frozenset({"LayerNormalization", "InstanceNormalization", "GroupNormalization"})


def learned_parameters(model: onnx.ModelProto) -> dict[str, TensorSite]:
    """Float constants that are biases or normalization parameters, by name.

    A bias is the bias input of Conv/Gemm/LSTM-like ops, or the operand of an Add that adds it
    to the output of a Conv/ConvTranspose/Gemm/MatMul (``Add(bias, MatMul(x, W))`` as torch
    writes a Linear on 3-D input, Paddle's bias Add after a Reshape); a normalization parameter
    is the scale or bias of LayerNormalization, InstanceNormalization or GroupNormalization.
    Anything else (anchors, grids, scales of a decode head) stays fixed.
    """
    index = build_use_index(model)
    producers = {o: n.op_type for _, g in iter_graphs(model.graph) for n in g.node for o in n.output}
    found = {}
    for site, proto in index.sites.items():
        if proto.data_type != onnx.TensorProto.FLOAT:
            continue
        terms = terminals(index, ("site", site))
        if terms and all(_learned_use(t, producers) for t in terms):
            found.setdefault(site.name, site)
    return found


def _learned_use(term, producers: dict[str, str]) -> bool:
    if term.use is None:
        return False
    node, k = term.use.node, term.use.input_index
    if (node.op_type, k) in table.BIAS_SLOTS:
        return True
    if node.op_type in NORM_PARAMETERS and k in (1, 2):
        return True
    if node.op_type == "Add" and len(node.input) == 2:
        return producers.get(node.input[1 - k]) in WEIGHT_OPS
    return False


def param_map(order: tuple[str, ...], sites: dict[str, TensorSite], keys: dict[str, str],
              model: onnx.ModelProto) -> ParamMap:
    shapes = {n: tuple(read_tensor(model, sites[n]).shape) for n in order}
    return ParamMap(order, shapes, {n: sites[n] for n in order}, {n: keys[n] for n in order if n in keys})
