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

__all__ = ["Rounding", "DAMPING", "conv_patches", "dense_rows", "gram", "feedback_round", "better_rows"]

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
    positions = positions[_subset(len(positions), rows, rng)]
    patches = np.empty((len(positions), x.shape[1], *kernel), x.dtype)
    for offset in product(*[range(k) for k in kernel]):
        at = tuple(positions[:, 1 + i] * strides[i] + offset[i] * dilations[i] for i in range(nd))
        patches[(slice(None), slice(None), *offset)] = x[(positions[:, 0], slice(None), *at)]
    return patches


def dense_rows(x: np.ndarray, rows: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """The input vectors a Gemm/MatMul multiplies by its weight: ``x`` as ``(vectors, features)``."""
    flat = x.reshape(-1, x.shape[-1])
    return flat[_subset(len(flat), rows, rng)]


def _subset(n: int, rows: int | None, rng: np.random.Generator | None) -> slice | np.ndarray:
    """All ``n`` vectors, or a sorted uniform choice of ``rows`` of them."""
    if rows is None or n <= rows:
        return slice(None)
    return np.sort((rng or np.random.default_rng(0)).choice(n, rows, replace=False))


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
    entries are returned exactly as given. Groups at once: ``w`` ``(groups, rows, K)`` with ``h``
    ``(groups, K, K)`` (a grouped Conv's; each group has its own inputs)."""
    w = np.array(w, dtype=np.float64)
    frozen = np.zeros(w.shape, bool) if frozen is None else np.broadcast_to(np.asarray(frozen, bool), w.shape)
    fresh = ~frozen if fresh is None else np.asarray(fresh, bool) & ~frozen
    n1 = np.broadcast_to(book.n1, w.shape)
    if w.ndim == 2:
        return _feedback_groups(w[None], np.asarray(h)[None], book.bits, n1[None], frozen[None], fresh[None], damping)[0]
    return _feedback_groups(w, np.asarray(h), book.bits, n1, frozen, fresh, damping)


def _feedback_groups(w, h, bits, n1, frozen, fresh, damping) -> np.ndarray:
    order = np.argsort(-np.diagonal(h, axis1=1, axis2=2), axis=1, kind="stable")[:, None, :]  # (G, 1, K)
    upper = inverse_cholesky(np.take_along_axis(np.take_along_axis(h, order.transpose(0, 2, 1), 1), order, 2), damping)
    permute = lambda a: np.take_along_axis(a, np.broadcast_to(order, a.shape), 2)  # noqa: E731
    work, movable, fresh, n1 = permute(w), ~permute(frozen), permute(fresh), permute(n1)
    k = w.shape[2]
    for start in range(0, k, BLOCK):  # GPTQ's lazy batches: the columns after a block move once
        end = min(start + BLOCK, k)
        errors = np.zeros((*w.shape[:2], end - start))
        for i in range(start, end):
            column = work[:, :, i]
            rounded = np.where(fresh[:, :, i], quantize(column, Codebook(bits, n1[:, :, i])), column)
            errors[:, :, i - start] = (column - rounded) / upper[:, i, i][:, None]
            work[:, :, i] = rounded
            if i + 1 < end:
                work[:, :, i + 1:end] -= errors[:, :, i - start, None] * upper[:, None, i, i + 1:end] \
                    * movable[:, :, i + 1:end]
        if end < k:
            work[:, :, end:] -= (errors @ upper[:, start:end, end:]) * movable[:, :, end:]
    out = np.empty_like(work)
    np.put_along_axis(out, np.broadcast_to(order, out.shape), work, 2)
    return np.where(frozen, w, out)


def better_rows(w: np.ndarray, a: np.ndarray, b: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``(groups, rows, K)`` arrays, ``a``'s row or ``b``'s, whichever moves the layer's
    output from ``w``'s less under ``h`` ``(groups, K, K)`` (ties: ``a``); and where ``b`` won.

    Why: with most of a row frozen, the feedback update (made for a row whose later entries are
    all free) is applied to the few free ones only, and can do worse than rounding alone.
    """
    def error(x):
        d = x - w
        return np.einsum("grk,grk->gr", d @ h, d)

    b_wins = error(b) < error(a)
    return np.where(b_wins[:, :, None], b, a), b_wins


def inverse_cholesky(h: np.ndarray, damping: float) -> np.ndarray:
    """Upper Cholesky factors of ``(h + damping·mean(diag h)·I)^-1``, for ``h`` ``(groups, K, K)``;
    a zero diagonal entry (an input that never varies) is set to 1 first, so that its column gives
    and takes nothing."""
    h = np.array(h, dtype=np.float64)
    diagonal = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diagonal <= 0  # (G, K)
    h[dead[:, :, None] | dead[:, None, :]] = 0.0
    idx = np.arange(h.shape[1])
    h[:, idx, idx] = np.where(dead, 1.0, diagonal)
    h[:, idx, idx] += damping * np.mean(h[:, idx, idx], axis=1, keepdims=True)
    if len(h) == 1:
        return np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    return _cholesky(_inverse(h)).transpose(0, 2, 1)


# Many small matrices (a depthwise Conv has one per channel): LAPACK per matrix with threaded BLAS
# is slow on a busy machine (480 inverses of 25 x 25: 16 s against 0.01 s on one thread), so
# these two work on the whole stack at once, one row at a time. Both need h symmetric positive
# definite, which the damping makes it.

def _inverse(h: np.ndarray) -> np.ndarray:
    """Gauss-Jordan on a stack of SPD matrices (no pivoting needed)."""
    a = h.copy()
    out = np.broadcast_to(np.eye(h.shape[1]), h.shape).copy()
    for i in range(h.shape[1]):
        pivot = a[:, i, i][:, None].copy()
        a[:, i, :] /= pivot
        out[:, i, :] /= pivot
        factor = a[:, :, i].copy()
        factor[:, i] = 0.0
        a -= factor[:, :, None] * a[:, i, None, :]
        out -= factor[:, :, None] * out[:, i, None, :]
    return out


def _cholesky(h: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of SPD matrices."""
    low = np.zeros_like(h)
    for j in range(h.shape[1]):
        low[:, j, j] = np.sqrt(h[:, j, j] - np.einsum("gk,gk->g", low[:, j, :j], low[:, j, :j]))
        low[:, j + 1:, j] = (h[:, j + 1:, j] - np.einsum("gik,gk->gi", low[:, j + 1:, :j], low[:, j, :j])) \
            / low[:, j, j][:, None]
    return low
