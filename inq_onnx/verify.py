"""Checks on a quantized model: onnx.checker, codebook membership, ONNX Runtime runs it, and
how closely it follows the float model (top-1 agreement, output SQNR, accuracy with labels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from inq_onnx import codebook
from inq_onnx.data import Samples, input_specs
from inq_onnx.errors import VerificationError
from inq_onnx.graph.tensors import constant_sites, iter_graphs, to_array
from inq_onnx.quantize import quantized_tensors
from inq_onnx.runtime import first_line, session
from inq_onnx.smoke import smoke_run



@dataclass(frozen=True)
class Fidelity:
    samples: int
    top1_agreement: float | None
    sqnr_db: float
    accuracy_float: float | None = None
    accuracy_quantized: float | None = None


@dataclass(frozen=True)
class VerifyReport:
    checked_tensors: int
    run_shapes: dict[str, list[int]] = field(default_factory=dict)
    """Random-input shapes ONNX Runtime ran; empty when the float model rejects random inputs."""
    fidelity: Fidelity | None = None


def off_codebook(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(name, count) of every recorded tensor with values outside its codebook."""
    stamp = quantized_tensors(model)
    if stamp is None:
        return []
    bits, tensors = stamp
    offenders = []
    for path, graph in iter_graphs(model.graph):
        for site, proto in constant_sites(graph, path):
            if site.name in tensors:
                q = to_array(proto)
                axes = tuple(tensors[site.name]["channel_axes"])
                n_off = int(q.size) if not np.any(q) else count_off(q, bits, axes)
                if n_off:
                    offenders.append((site.name, n_off))
    return offenders


def count_off(q: np.ndarray, bits: int, axes: tuple[int, ...]) -> int:
    try:
        book = codebook.make_codebook(q, bits, axes)
    except ValueError:
        return int(q.size)
    return int(np.sum(~codebook.in_codebook(q, book)))


def synthetic_feeds(model: onnx.ModelProto, free_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the model's shapes: a leading dynamic dim is 1 (the batch), other dynamic
    dims ``free_dim``; dims sharing a dim_param name get the same size."""
    rng = np.random.default_rng(seed)
    named: dict[str, int] = {}
    feeds = {}
    for spec in input_specs(model):
        shape = []
        for i, (dim, name) in enumerate(zip(spec.shape, spec.dim_names or (None,) * len(spec.shape))):
            if dim is None:
                dim = named.setdefault(name, 1 if i == 0 else free_dim) if name else (1 if i == 0 else free_dim)
            shape.append(dim)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.random(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, spec.dtype)
    return feeds


def fidelity(reference: onnx.ModelProto, model: onnx.ModelProto, samples: Samples, *, limit: int = 512,
             batch_size: int = 64, pins: dict | None = None) -> Fidelity:
    """Agreement of the quantized model with the float one on real samples (``pins``: inputs
    fed the same fixed value every time, such as a sample rate)."""
    ref_sess, q_sess = session(reference), session(model)
    index = first_float_output(ref_sess)
    ref_outs, q_outs = [], []
    for feeds in samples.batches(batch_size, limit):
        feeds = {**feeds, **(pins or {})}
        ref_outs.append(ref_sess.run(None, feeds)[index])
        q_outs.append(q_sess.run(None, feeds)[index])
    ref, q = np.concatenate(ref_outs).astype(np.float64), np.concatenate(q_outs).astype(np.float64)
    noise = float(np.sum((ref - q) ** 2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)
    agreement = acc_f = acc_q = None
    if ref.ndim == 2 and ref.shape[-1] > 1:  # class scores: [samples, classes]
        agreement = float(np.mean(ref.argmax(-1) == q.argmax(-1)))
        if samples.labels is not None and ref.ndim == 2:
            labels = samples.labels[: len(ref)]
            acc_f, acc_q = float(np.mean(ref.argmax(-1) == labels)), float(np.mean(q.argmax(-1) == labels))
    return Fidelity(len(ref), agreement, sqnr, acc_f, acc_q)


def first_float_output(sess) -> int:
    for i, out in enumerate(sess.get_outputs()):
        if out.type in ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"):
            return i
    raise VerificationError("the model has no float output to compare", "fidelity needs a float output")


def verify(model: onnx.ModelProto, *, reference: onnx.ModelProto | None = None,
           samples: Samples | None = None, pins: dict | None = None) -> VerifyReport:
    """All checks; raises VerificationError on the first failure."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise VerificationError(f"the output fails onnx.checker: {first_line(e)}", "report it with the model attached") from e
    offenders = off_codebook(model)
    if offenders:
        name, count = offenders[0]
        raise VerificationError(f"{count} values of '{name}' are not in its codebook ({len(offenders)} tensors affected)",
                                "quantize the model again; a frozen weight may have been changed by another tool")
    stamp = quantized_tensors(model)
    shapes = smoke_run(model, reference, pins)
    fid = fidelity(reference, model, samples, pins=pins) if samples is not None and reference is not None else None
    return VerifyReport(len(stamp[1]) if stamp else 0, shapes, fid)
