"""Error feedback rounding: round weights to the codebook so that a layer's output on measured
inputs moves as little as possible (the OBQ/GPTQ update, Frantar et al. 2023, onto P).

A layer computes ``y = W x`` per row of ``W``; its inputs' Gram matrix ``H = X^T X`` makes the
output error of a weight change ``d`` equal ``d^T H d``. Entries are rounded one input column at
a time, in order of decreasing ``diag(H)``; each rounding error is spread onto the same row's
entries not yet visited, weighted by the upper Cholesky factor of ``H^-1``, as GPTQ does. In INQ
only the step's newly frozen entries are rounded and only entries that are not frozen may move:
frozen entries keep their bits, the ones left float absorb the error before retraining.

Pure numpy; the layer's inputs are measured on a model by ``compensation``.
"""

from __future__ import annotations

import enum
from itertools import product

import numpy as np

from inq_onnx.codebook import Codebook, quantize

__all__ = ["Rounding", "DAMPING", "conv_patches", "dense_rows", "gram", "feedback_round"]

BLOCK = 128  # columns rounded before the rest of the row is updated
DAMPING = 0.01  # of the mean of diag(H), added to it: H is often singular (few samples, dead inputs)


class Rounding(enum.Enum):
    """How a step's newly frozen weights are rounded. FEEDBACK: with samples, by error feedback
    (the float weights of the same layer absorb the error); NEAREST: each to its nearest value
    of P, as the paper does."""

    FEEDBACK = "feedback"
    NEAREST = "nearest"


def conv_patches(x: np.ndarray, kernel: tuple[int, ...], *, strides: tuple[int, ...], pads: tuple[int, ...],
                 dilations: tuple[int, ...], rows: int | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The input patches a Conv multiplies by its kernel: ``(patches, C, *kernel)`` for ``x`` of
    shape ``(N, C, *spatial)``; ``pads`` as ONNX writes them (all begins, then all ends). With
    ``rows``, a uniform random choice of at most that many output positions (from ``rng``)."""
    nd = len(kernel)
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    out = [(x.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    positions = np.stack(np.meshgrid(np.arange(x.shape[0]), *[np.arange(o) for o in out], indexing="ij"),
                         axis=-1).reshape(-1, nd + 1)
    if rows is not None and len(positions) > rows:
        positions = positions[np.sort((rng or np.random.default_rng(0)).choice(len(positions), rows, replace=False))]
    patches = np.empty((len(positions), x.shape[1], *kernel), x.dtype)
    for offset in product(*[range(k) for k in kernel]):
        at = tuple(positions[:, 1 + i] * strides[i] + offset[i] * dilations[i] for i in range(nd))
        patches[(slice(None), slice(None), *offset)] = x[(positions[:, 0], slice(None), *at)]
    return patches


def dense_rows(x: np.ndarray, rows: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """The input vectors a Gemm/MatMul multiplies by its weight: ``x`` as ``(vectors, features)``."""
    flat = x.reshape(-1, x.shape[-1])
    if rows is not None and len(flat) > rows:
        flat = flat[np.sort((rng or np.random.default_rng(0)).choice(len(flat), rows, replace=False))]
    return flat


def gram(patches: np.ndarray, groups: int = 1) -> np.ndarray:
    """``(groups, K, K)`` Gram matrices of ``patches`` (``(n, C, ...)`` or ``(n, features)``), the
    channels split into ``groups`` as a grouped Conv splits them; float64."""
    x = patches.reshape(len(patches), groups, -1).astype(np.float32, copy=False).transpose(1, 0, 2)
    return np.matmul(x.transpose(0, 2, 1), x).astype(np.float64)


def feedback_round(w: np.ndarray, h: np.ndarray, book: Codebook, *, frozen: np.ndarray | None = None,
                   fresh: np.ndarray | None = None, damping: float = DAMPING) -> np.ndarray:
    """Rows ``w`` ``(rows, K)`` with the ``fresh`` entries rounded to ``book`` (its ``n1`` broadcast
    to ``w``'s shape) and every other entry that is not ``frozen`` moved to absorb their error
    under ``h`` ``(K, K)``. Defaults: nothing frozen, everything fresh. float64 out; frozen
    entries are returned exactly as given."""
    w = np.array(w, dtype=np.float64)
    frozen = np.zeros(w.shape, bool) if frozen is None else np.asarray(frozen, bool)
    fresh = ~frozen if fresh is None else np.asarray(fresh, bool) & ~frozen
    n1 = np.broadcast_to(book.n1, w.shape)
    order = np.argsort(-np.diag(h), kind="stable")
    upper = inverse_cholesky(h[np.ix_(order, order)], damping)
    work, movable = w[:, order], ~frozen[:, order]
    fresh, n1 = fresh[:, order], n1[:, order]
    k = w.shape[1]
    for start in range(0, k, BLOCK):  # GPTQ's lazy batches: the columns after a block move once
        end = min(start + BLOCK, k)
        errors = np.zeros((w.shape[0], end - start))
        for i in range(start, end):
            column = work[:, i]
            rounded = np.where(fresh[:, i], quantize(column, Codebook(book.bits, n1[:, i])), column)
            errors[:, i - start] = (column - rounded) / upper[i, i]
            work[:, i] = rounded
            if i + 1 < end:
                work[:, i + 1:end] -= np.outer(errors[:, i - start], upper[i, i + 1:end]) * movable[:, i + 1:end]
        if end < k:
            work[:, end:] -= (errors @ upper[start:end, end:]) * movable[:, end:]
    out = np.empty_like(work)
    out[:, order] = work
    return np.where(frozen, w, out)


def inverse_cholesky(h: np.ndarray, damping: float) -> np.ndarray:
    """Upper Cholesky factor of ``(h + damping·mean(diag h)·I)^-1``; a zero diagonal entry (an
    input that never varies) is set to 1 first, so that its column gives and takes nothing."""
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, :], h[:, dead] = 0.0, 0.0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damping * np.mean(np.diag(h))
    return np.linalg.cholesky(np.linalg.inv(h)).T
