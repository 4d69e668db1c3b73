"""Error feedback in a model: measure what each weight multiplies (its layer's inputs) on a few
samples with ONNX Runtime, then round weights by ``feedback`` instead of one at a time.

Full INQ rounds each step's newly frozen weights this way (``Rounding.FEEDBACK``, the default
with data): the weights left float absorb the rounding error at once, and retraining starts
from there. A weight whose layer is not a Conv/Gemm/MatMul of the main graph reading it once as
input 1, or whose inputs cannot be measured, is rounded to nearest, and the result says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from inq_onnx import feedback
from inq_onnx.feedback import Rounding
from inq_onnx.calibration import batched_values
from inq_onnx.codebook import Codebook
from inq_onnx.data import Samples
from inq_onnx.graph.io import fits_one_session
from inq_onnx.graph.table import attr
from inq_onnx.graph.tensors import TensorSite, tensor_proto
from inq_onnx.graph.uses import Use, build_use_index
from inq_onnx.partition import apply_step
from inq_onnx.runtime import first_line

__all__ = ["Rounding", "LayerInput", "find_inputs", "measure_grams", "FeedbackRounder", "feedback_rounder",
           "step_rounder"]

SAMPLES = 64  # a seeded random subset of the samples
ROWS = 16384  # input vectors (Conv patches, MatMul rows) per layer, a seeded random subset
BATCH = 8  # samples per run: every measured layer input of a batch is held at once
LAYER_BYTES = 64 << 20  # a layer's Gram matrices (float64) at most this large: K <= 2896 inputs per output
TOTAL_BYTES = 1 << 30  # all layers' together; the layers past it round to nearest
OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerInput:
    """What a weight multiplies: the node's input 0, and how it is laid out against the weight."""

    op_type: str
    activation: str
    group: int = 1
    trans_b: bool = False
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()

    def gram_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of this layer's float64 Gram matrices, for a weight of ``shape``."""
        k = int(np.prod(shape[1:])) if self.op_type == "Conv" else shape[0 if not self.trans_b else 1]
        return self.group * k * k * 8

    def rows(self, w: np.ndarray) -> np.ndarray:
        """``w`` as ``(groups, rows, K)``: one row per output, K the inputs it multiplies."""
        if self.op_type == "Conv":
            return w.reshape(self.group, w.shape[0] // self.group, -1)
        return (w if self.trans_b else w.T)[None]

    def weights(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of :meth:`rows`."""
        if self.op_type == "Conv":
            return rows.reshape(shape)
        return rows[0] if self.trans_b else rows[0].T

    def gram(self, x: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
        if self.op_type == "Conv":
            patches = feedback.conv_patches(x, self.kernel, strides=self.strides, pads=self.pads,
                                            dilations=self.dilations, rows=rows, rng=rng)
            return feedback.gram(patches, self.group)
        return feedback.gram(feedback.dense_rows(x, rows, rng))


def _layer_input(node: onnx.NodeProto, shape: tuple[int, ...]) -> LayerInput | str:
    if node.op_type == "MatMul":
        return LayerInput("MatMul", node.input[0]) if len(shape) == 2 else "a MatMul weight of rank other than 2"
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            return "a Gemm with transA"
        return LayerInput("Gemm", node.input[0], trans_b=bool(attr(node, "transB", 0)))
    nd = len(shape) - 2
    if nd < 1 or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "a Conv with auto_pad or without spatial axes"
    return LayerInput("Conv", node.input[0], group=int(attr(node, "group", 1)), kernel=tuple(shape[2:]),
                      strides=tuple(attr(node, "strides", [1] * nd)), pads=tuple(attr(node, "pads", [0] * 2 * nd)),
                      dilations=tuple(attr(node, "dilations", [1] * nd)))


def find_inputs(model: onnx.ModelProto, weights) -> tuple[dict[TensorSite, LayerInput], dict[TensorSite, str]]:
    """The layer input of each weight site in ``weights``, and why each other one has none."""
    index = build_use_index(model)
    found, skipped = {}, {}
    for site in weights:
        uses = index.of(("site", site))
        if site.graph_path:
            skipped[site] = "inside a subgraph"
        elif len(uses) != 1 or not isinstance(uses[0], Use) or uses[0].input_index != 1 or uses[0].node.op_type not in OPS:
            skipped[site] = "not the weight of one Conv, Gemm or MatMul"
        else:
            layer = _layer_input(uses[0].node, tuple(index.sites[site].dims))
            (skipped if isinstance(layer, str) else found)[site] = layer
    return found, skipped


def measure_grams(model: onnx.ModelProto, layers: dict[TensorSite, LayerInput], samples: Samples, *,
                  pins: dict | None = None, limit: int = SAMPLES, rows: int = ROWS,
                  seed: int = 0) -> dict[TensorSite, np.ndarray]:
    """Each layer's ``(groups, K, K)`` input Gram matrix on at most ``limit`` samples (a seeded
    random subset), from at most ``rows`` input vectors per layer."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.permutation(len(samples))[:limit])
    elem = {layer.activation: tensor_proto(model, site).data_type for site, layer in layers.items()}
    per_batch = max(1, rows // max(1, len(range(0, len(index), BATCH))))
    grams: dict[TensorSite, np.ndarray] = {}
    for values in batched_values(model, elem, samples, index, BATCH, pins):
        for site, layer in layers.items():
            g = layer.gram(np.asarray(values[layer.activation], np.float32), rng, per_batch)
            grams[site] = grams[site] + g if site in grams else g
    return grams


@dataclass
class FeedbackRounder:
    """Rounds a partition step's new weights by error feedback where a Gram matrix was measured,
    to nearest elsewhere; ``skipped`` says why a weight was rounded to nearest."""

    layers: dict[TensorSite, LayerInput]
    grams: dict[TensorSite, np.ndarray]
    skipped: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    rows: list[int] = field(default_factory=lambda: [0, 0])  # rows rounded to nearest because feedback did worse; all

    def __call__(self, site: TensorSite, w: np.ndarray, old: np.ndarray, new: np.ndarray, book: Codebook) -> np.ndarray:
        if site not in self.grams:
            return apply_step(w, old, new, book)
        layer, h = self.layers[site], self.grams[site]
        n1 = np.broadcast_to(book.n1, w.shape)
        rows, frozen, fresh, n1 = (layer.rows(a) for a in (w, old, new & ~old, n1))
        out = feedback.feedback_round(rows, h, Codebook(book.bits, n1), frozen=frozen, fresh=fresh)
        moved = layer.weights(out, w.shape).astype(w.dtype)
        fed = apply_step(np.where(old, w, moved), old, new, book)  # the fresh entries again in w's dtype: exact in P
        nearest = apply_step(w, old, new, book)
        best, lost = feedback.better_rows(rows.astype(np.float64), layer.rows(fed).astype(np.float64),
                                          layer.rows(nearest).astype(np.float64), h)
        self.rows[0] += int(lost.sum())
        self.rows[1] += lost.size
        return layer.weights(best, w.shape).astype(w.dtype)

    def round_all(self, site: TensorSite, w: np.ndarray, book: Codebook) -> np.ndarray:
        """Every entry of ``w`` rounded (one-shot)."""
        return self(site, w, np.zeros(w.shape, bool), np.ones(w.shape, bool), book)

    def counts(self) -> dict:
        """What a run's log line keeps of a step's rounding."""
        return {"weights": len(self.grams), "nearest": len(self.skipped), "samples": self.samples,
                "rows_nearest": self.rows[0], "rows": self.rows[1]}

    def summary(self) -> dict:
        return {"samples": self.samples, "weights": sorted(s.name for s in self.grams), "nearest": dict(self.skipped),
                "rows_nearest": self.rows[0], "rows": self.rows[1]}


def within_budget(model: onnx.ModelProto, layers: dict[TensorSite, LayerInput]):
    """The layers whose Gram matrices fit ``LAYER_BYTES`` each and ``TOTAL_BYTES`` together (in
    graph order), and why each other one is rounded to nearest."""
    kept, why, total = {}, {}, 0
    for site, layer in layers.items():
        size = layer.gram_bytes(tuple(tensor_proto(model, site).dims))
        if size > LAYER_BYTES:
            why[site.name] = f"too many inputs per output for error feedback ({size >> 20} MB of statistics)"
        elif total + size > TOTAL_BYTES:
            why[site.name] = f"the statistics of the layers before it took the {TOTAL_BYTES >> 20} MB allowed"
        else:
            kept[site], total = layer, total + size
    return kept, why


def feedback_rounder(model: onnx.ModelProto, weights, samples: Samples, *, pins: dict | None = None,
                     seed: int = 0) -> FeedbackRounder:
    """Measure the layer inputs of ``weights`` (sites) on ``model``; a rounder for the step."""
    layers, why = find_inputs(model, weights)
    skipped = {site.name: reason for site, reason in why.items()}
    used = min(len(samples), SAMPLES)
    layers, too_large = within_budget(model, layers)
    skipped.update(too_large)
    if not layers:
        return FeedbackRounder({}, {}, skipped, used)
    if not fits_one_session(model):
        return FeedbackRounder({}, {}, {**skipped, **{s.name: "the model is too large for one session" for s in layers}},
                               used)
    try:
        grams = measure_grams(model, layers, samples, pins=pins, seed=seed)
    except Exception as e:  # ORT's own errors are untyped: rounding to nearest, and said so
        reason = first_line(e)
        return FeedbackRounder({}, {}, {**skipped, **{s.name: f"the model could not be run: {reason}" for s in layers}},
                               used)
    return FeedbackRounder(layers, grams, skipped, used)


def step_rounder(model: onnx.ModelProto, sidecar, options, samples: Samples, *, pins: dict | None = None,
                 seed: int = 0) -> FeedbackRounder | None:
    """The rounder of the next partition step of ``sidecar``'s weights (``QuantizeOptions``
    ``options``): None when they round to nearest."""
    from inq_onnx.incremental import weight_sites

    if options.rounding is not Rounding.FEEDBACK:
        return None
    sites = weight_sites(model, options)
    return feedback_rounder(model, [sites[k] for k in sidecar.tensors], samples, pins=pins, seed=seed)
