"""Checks on a quantized model: onnx.checker, codebook membership, ONNX Runtime runs it, and
how closely it follows the float model (top-1 agreement, output SQNR, accuracy with labels)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from inq_onnx import codebook
from inq_onnx.data import Samples, input_specs
from inq_onnx.errors import VerificationError
from inq_onnx.graph.readers import check_with_onnx
from inq_onnx.graph.tensors import constant_sites, iter_graphs, tensor_values
from inq_onnx.quantize import quantized_tensors
from inq_onnx.runtime import first_line, session
from inq_onnx.smoke import smoke_run



ModelLike = onnx.ModelProto | str | os.PathLike


def as_source(model: ModelLike) -> onnx.ModelProto | str:
    return model if isinstance(model, onnx.ModelProto) else str(model)


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
    """Input shapes ONNX Runtime ran; empty when the float model rejects every input tried."""
    fidelity: Fidelity | None = None
    ran_on_samples: bool = False  # the run was on real samples (else random inputs)


def off_codebook(model: onnx.ModelProto, base_dir: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """(name, count) of every recorded tensor with values outside its codebook (``base_dir``:
    where external data lives; read one tensor at a time)."""
    stamp = quantized_tensors(model)
    if stamp is None:
        return []
    bits, tensors = stamp
    offenders = []
    for path, graph in iter_graphs(model.graph):
        for site, proto in constant_sites(graph, path):
            if site.name in tensors:
                q = tensor_values(proto, base_dir)
                axes = tuple(tensors[site.name]["channel_axes"])
                n_off = int(q.size) if not np.any(q) else count_off(q, bits, axes)
                if n_off:
                    offenders.append((site.name, n_off))
    return offenders


def count_off(q: np.ndarray, bits: int, axes: tuple[int, ...]) -> int:
    try:
        book = codebook.make_codebook_blockwise(q, bits, axes)
    except ValueError:
        return int(q.size)
    return sum(int(np.sum(~codebook.in_codebook(part, part_book))) for _, part, part_book in codebook.blocks(q, book))


def synthetic_feeds(model: onnx.ModelProto, free_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the model's shapes: the batch dim (``InputSpec.sample_axis``, dynamic) is 1,
    other dynamic dims ``free_dim``; dims sharing a dim_param name get the same size."""
    rng = np.random.default_rng(seed)
    named: dict[str, int] = {}
    feeds = {}
    for spec in input_specs(model):
        shape = []
        for i, (dim, name) in enumerate(zip(spec.shape, spec.dim_names or (None,) * len(spec.shape))):
            if dim is None:
                size = 1 if i == spec.sample_axis else free_dim
                dim = named.setdefault(name, size) if name else size
            shape.append(dim)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.random(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, spec.dtype)
    return feeds


def fidelity(reference: ModelLike, model: ModelLike, samples: Samples, *, limit: int | None = None,
             batch_size: int = 64, pins: dict | None = None) -> Fidelity:
    """Agreement of the quantized model with the float one on real samples, every one of them
    (``limit``: the first ``limit`` only; a class-sorted file's first samples are a few classes;
    ``pins``: inputs fed the same fixed value every time, such as a sample rate). The models (in
    memory or paths) run one after the other, so that only one is loaded in ONNX Runtime at a time."""
    ref_sess = session(as_source(reference))
    index = first_float_output(ref_sess)
    ref = outputs(ref_sess, index, samples, batch_size, limit, pins)
    del ref_sess
    q = outputs(session(as_source(model)), index, samples, batch_size, limit, pins)
    noise = float(np.sum((ref - q) ** 2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)
    agreement = acc_f = acc_q = None
    if ref.ndim == 2 and ref.shape[-1] > 1:  # class scores: [samples, classes]
        agreement = float(np.mean(ref.argmax(-1) == q.argmax(-1)))
        if samples.labels is not None and ref.ndim == 2:
            labels = samples.labels[: len(ref)]
            acc_f, acc_q = float(np.mean(ref.argmax(-1) == labels)), float(np.mean(q.argmax(-1) == labels))
    return Fidelity(len(ref), agreement, sqnr, acc_f, acc_q)


def outputs(sess, index: int, samples: Samples, batch_size: int, limit: int, pins: dict | None) -> np.ndarray:
    runs = [sess.run(None, {**feeds, **(pins or {})})[index] for feeds in samples.batches(batch_size, limit)]
    return np.concatenate(runs).astype(np.float64)


def first_float_output(sess) -> int:
    for i, out in enumerate(sess.get_outputs()):
        if out.type in ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"):
            return i
    raise VerificationError("the model has no float output to compare", "fidelity needs a float output")


def run_feeds(model: onnx.ModelProto, samples: Samples) -> dict[str, np.ndarray] | None:
    """The first sample(s) as feeds for the ORT run: one, or as many as a fixed batch dim asks."""
    specs = [spec for spec in input_specs(model) if spec.name in samples.inputs]
    fixed = [spec.shape[spec.sample_axis] for spec in specs if spec.shape and spec.shape[spec.sample_axis]]
    count = max(fixed, default=1)
    return samples.batch(0, count) if specs and len(samples) >= count else None


def verify(model: ModelLike, *, reference: ModelLike | None = None, samples: Samples | None = None,
           pins: dict | None = None, run_on: Samples | None = None) -> VerifyReport:
    """All checks; raises VerificationError on the first failure. ONNX Runtime runs the model on
    ``run_on`` (default ``samples``; the first one or few), else on random inputs; ``samples``
    also give the fidelity against ``reference``.

    ``model`` and ``reference`` are in-memory models or paths. A path is checked from the file:
    its tensors are read one at a time and ONNX Runtime loads the file itself, so verifying a
    model just written holds no further copy of it.
    """
    path = None if isinstance(model, onnx.ModelProto) else Path(model)
    try:
        check_with_onnx(path or model, "the output")
    except (onnx.checker.ValidationError, ValueError) as e:  # ValueError: over 2 GB in memory
        raise VerificationError(f"the output fails onnx.checker: {first_line(e)}", "report it with the model attached") from e
    if path is not None:
        model = onnx.load(str(path), load_external_data=False)
    offenders = off_codebook(model, path.parent if path else None)
    if offenders:
        name, count = offenders[0]
        raise VerificationError(f"{count} values of '{name}' are not in its codebook ({len(offenders)} tensors affected)",
                                "quantize the model again; a frozen weight may have been changed by another tool")
    stamp = quantized_tensors(model)
    run_on = run_on if run_on is not None else samples
    feeds = run_feeds(model, run_on) if run_on is not None else None
    model = path or model
    shapes, on_samples = smoke_run(model, reference, pins, feeds)
    fid = fidelity(reference, model, samples, pins=pins) if samples is not None and reference is not None else None
    return VerifyReport(len(stamp[1]) if stamp else 0, shapes, fid, on_samples)
