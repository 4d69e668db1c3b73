"""Bias correction on a model: measure each layer's mean input on a few samples with ONNX
Runtime, then move each bias by the output shift its weights' rounding causes.

The math is ``bias_correction`` (pure numpy); where the biases are is ``graph.bias_layers``.
Used by one-shot ``quantize`` with samples (``--val``) and after every partition step of full
INQ (on the training samples, before retraining).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from inq_onnx import bias_correction as bc
from inq_onnx.data import Samples
from inq_onnx.graph.bias_layers import Layer, add_bias, expose_values, find_layers
from inq_onnx.graph.io import fits_one_session
from inq_onnx.graph.tensors import TensorSite, read_tensor, tensor_proto, write_tensor
from inq_onnx.runtime import first_line, session

__all__ = ["CALIBRATION_SAMPLES", "BiasReport", "Calibration", "calibrate", "correct_step", "batched_values"]

CALIBRATION_SAMPLES = 256  # a seeded random subset: sample files are often sorted by class
BATCH = 32


@dataclass(frozen=True)
class BiasReport:
    """What bias correction did: the weights whose layer bias moved, and why others did not."""

    samples: int
    corrected: tuple[str, ...] = ()
    created: tuple[str, ...] = ()  # of those, the layers that had no bias before
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the model could not be run to measure the inputs

    def as_dict(self) -> dict:
        return {"samples": self.samples, "corrected": list(self.corrected), "created": list(self.created),
                "skipped": dict(self.skipped), "error": self.error}


@dataclass
class Calibration:
    """Layers and their measured mean inputs; collects shifts as weights are rounded."""

    layers: dict[TensorSite, Layer]
    means: dict[TensorSite, np.ndarray]
    samples: int
    skipped: dict[str, str]
    error: str | None = None
    shifts: dict[TensorSite, np.ndarray] = field(default_factory=dict)

    def rounded(self, site: TensorSite, w: np.ndarray, q: np.ndarray) -> None:
        """Record the output shift of rounding ``w`` to ``q`` (a weight without a layer: ignored)."""
        if site in self.layers and site in self.means:
            self.shifts[site] = shift(self.layers[site], w, q, self.means[site])

    def apply(self, model: onnx.ModelProto, write=write_tensor) -> BiasReport:
        """Move every recorded layer's bias (or give it one) in ``model``."""
        corrected, created = [], []
        for site, s in self.shifts.items():
            layer = self.layers[site]
            if layer.bias is None:
                add_bias(model, layer, bc.corrected_bias(None, s, layer.beta))
                created.append(site.name)
            else:
                bias = read_tensor(model, layer.bias)
                write(model, layer.bias, bc.corrected_bias(bias, s, layer.beta).astype(bias.dtype))
            corrected.append(site.name)
        return BiasReport(self.samples, tuple(corrected), tuple(created), dict(self.skipped), self.error)


def shift(layer: Layer, w: np.ndarray, q: np.ndarray, mean_x: np.ndarray) -> np.ndarray:
    if layer.op_type == "Conv":
        return bc.conv_shift(w, q, mean_x, layer.group)
    return bc.dense_shift(w, q, mean_x, layer.trans_b, layer.alpha)


def calibrate(model: onnx.ModelProto, weights, samples: Samples, *, pins: dict | None = None, create: bool = True,
              biases: set[str] | None = None, limit: int = CALIBRATION_SAMPLES, seed: int = 0) -> Calibration:
    """Find the layers of ``weights`` (sites) and measure their mean inputs by running ``model``
    on at most ``limit`` samples (a seeded random subset). ``biases``: only these bias names may
    move (the others' layers are skipped); ``create``: layers without a bias may get one."""
    layers, why = find_layers(model, weights, create=create)
    skipped = {site.name: reason for site, reason in why.items()}
    for site, layer in list(layers.items()):
        if biases is not None and (layer.bias is None or layer.bias.name not in biases):
            skipped[site.name] = "its bias is not trained here"
            del layers[site]
    index = np.sort(np.random.default_rng(seed).permutation(len(samples))[:limit])
    if not layers:
        return Calibration(layers, {}, len(index), skipped)
    if not fits_one_session(model):
        return Calibration({}, {}, len(index), skipped, error="the model has external data or is over 2 GB "
                                                               "(it would be copied whole into ONNX Runtime)")
    try:
        means = measure_means(model, layers, samples, index, pins or {})
    except Exception as e:  # ORT's own errors are untyped; correction is then skipped, and said so
        reason = first_line(e)
        return Calibration({}, {}, len(index), skipped, error=f"the model could not be run on the samples: {reason}")
    return Calibration(layers, means, len(index), skipped)


def batched_values(model: onnx.ModelProto, values: dict[str, int], samples: Samples, index: np.ndarray, batch: int,
                   pins: dict | None):
    """For each batch of ``batch`` samples at ``index``: ``{name: array}`` of the model's
    ``values`` ({name: onnx elem type}), graph inputs read from the feeds themselves."""
    inputs = {i.name for i in model.graph.input}
    names = [n for n in values if n not in inputs]
    sess = session(expose_values(model, {n: values[n] for n in names}).model)
    for start in range(0, len(index), batch):
        feeds = {**samples.take(index[start:start + batch]), **(pins or {})}
        out = dict(zip(names, sess.run(names, feeds))) if names else {}
        yield {**out, **{n: feeds[n] for n in values if n in inputs}}


def measure_means(model: onnx.ModelProto, layers: dict[TensorSite, Layer], samples: Samples, index: np.ndarray,
                  pins: dict) -> dict[TensorSite, np.ndarray]:
    """Mean input of every layer (per channel for Conv, per feature for Gemm/MatMul)."""
    elem = {layer.activation: tensor_proto(model, layer.weight).data_type for layer in layers.values()}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    conv_inputs = {layer.activation for layer in layers.values() if layer.op_type == "Conv"}
    for values in batched_values(model, elem, samples, index, BATCH, pins):
        for name, x in values.items():
            means = bc.channel_means(x) if name in conv_inputs else bc.feature_means(x)
            n = x.size // max(1, means.size)
            sums[name] = sums.get(name, 0.0) + means * n
            counts[name] = counts.get(name, 0) + n
    return {site: sums[layer.activation] / counts[layer.activation] for site, layer in layers.items()}


def correct_step(before: onnx.ModelProto, after: onnx.ModelProto, weights, samples: Samples, *,
                 pins: dict | None = None, biases: set[str] | None = None, seed: int = 0) -> onnx.ModelProto:
    """After a partition step: move the biases of ``after`` (in place, and returned) by the output
    shift between the weights of ``before`` and ``after``, with mean inputs measured on ``before``.
    Only existing biases named in ``biases`` move, so the trainable parameters stay the same."""
    cal = calibrate(before, weights, samples, pins=pins, create=False, biases=biases, seed=seed)
    for site in cal.layers:
        w, q = read_tensor(before, site), read_tensor(after, site)
        if not np.array_equal(w, q):
            cal.rounded(site, w, q)
    cal.apply(after)
    return after
