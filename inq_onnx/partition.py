"""The partition of Algorithm 1, pure numpy: which weights are quantized (frozen) and which train.

A mask is a boolean array of the tensor's shape, True = quantized and frozen (the paper's T = 0).
Masks only grow: a weight once quantized never trains again, also when it was rounded to zero.

Counting convention (paper section 4, "pruning + INQ"): the exact zeros of the pre-trained tensor
(``n_pruned`` of them) are frozen from the start, and sigma applies to the other weights. After
step n a tensor of ``size`` entries has exactly

    n_pruned + floor(sigma_n * (size - n_pruned) + 0.5)

quantized entries (round half up). For a dense tensor (n_pruned = 0) this is round(sigma_n * size).
"""

from __future__ import annotations

import enum
import hashlib
import math

import numpy as np

from inq_onnx.codebook import Codebook, in_codebook, quantize

__all__ = [
    "PartitionStrategy", "initial_mask", "target_count", "partition_rng", "grow_mask",
    "check_grows", "apply_step", "frozen_off_codebook", "relative_rounding_error",
]


class PartitionStrategy(enum.Enum):
    MAGNITUDE = "magnitude"  # the paper's "pruning-inspired" choice: largest |w| first
    RANDOM = "random"  # the paper's ablation, seeded
    ROUNDING_ERROR = "rounding-error"  # smallest relative rounding error |w - Q(w)| / |w| first


def initial_mask(w: np.ndarray) -> np.ndarray:
    """The mask before step 1: the exact zeros of the pre-trained tensor (a pruned model)."""
    return np.asarray(w) == 0


def target_count(size: int, n_pruned: int, sigma: float) -> int:
    """How many entries are quantized once the accumulated portion ``sigma`` is reached."""
    if not 0 <= n_pruned <= size:
        raise ValueError(f"n_pruned must be within 0..{size}, got {n_pruned}")
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must be within [0, 1], got {sigma!r}")
    return n_pruned + min(size - n_pruned, math.floor(sigma * (size - n_pruned) + 0.5))


def partition_rng(seed: int, name: str, step: int) -> np.random.Generator:
    """A generator that depends only on (seed, tensor name, step): reproducible across runs,
    processes and the order tensors are visited in (``hash()`` is salted per process; this is not)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int.from_bytes(digest, "little"), int(step)])


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, ties going to the lower position; O(n)."""
    n = values.size
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    threshold = np.partition(values, n - k)[n - k]
    above = np.flatnonzero(values > threshold)
    tied = np.flatnonzero(values == threshold)[: k - above.size]
    return np.sort(np.concatenate([above, tied]))


def grow_mask(
    w: np.ndarray,
    mask: np.ndarray,
    sigma: float,
    *,
    n_pruned: int,
    strategy: PartitionStrategy = PartitionStrategy.MAGNITUDE,
    rng: np.random.Generator | None = None,
    codebook: Codebook | None = None,
) -> np.ndarray:
    """A new mask with exactly ``target_count(w.size, n_pruned, sigma)`` entries True.

    Only entries still float (``~mask``) are added: the largest |w| (MAGNITUDE; equal magnitudes
    go to the lower flat index), a uniform choice drawn from ``rng`` (RANDOM; see
    :func:`partition_rng`) or the smallest relative rounding error to ``codebook``
    (ROUNDING_ERROR, see :func:`relative_rounding_error`; ties to the lower flat index). ``n_pruned`` is the number of exact zeros of the *pre-trained* tensor,
    which the current weights no longer tell (quantizing rounds some weights to zero).
    Raises ValueError if ``mask`` already holds more entries than the target (masks only grow).
    """
    w = np.asarray(w)
    mask = np.asarray(mask)
    if mask.shape != w.shape or mask.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array of shape {w.shape}, got {mask.dtype} {mask.shape}")
    strategy = PartitionStrategy(strategy)
    target = target_count(w.size, n_pruned, sigma)
    flat_mask = mask.reshape(-1)
    have = int(np.count_nonzero(flat_mask))
    if have > target:
        raise ValueError(
            f"the mask already has {have} quantized entries, more than the {target} that sigma={sigma} asks for; "
            "masks only grow, so the schedule or n_pruned differs from the run that made this mask"
        )
    free = np.flatnonzero(~flat_mask)
    k = target - have
    if strategy is PartitionStrategy.RANDOM:
        if rng is None:
            raise ValueError("the random partition needs rng (see partition_rng(seed, name, step))")
        chosen = rng.choice(free.size, size=k, replace=False, shuffle=False) if k else np.empty(0, dtype=np.intp)
    else:
        magnitude = np.abs(w.reshape(-1)[free])
        if not np.all(np.isfinite(magnitude)):
            raise ValueError("the tensor holds NaN or infinite values")
        if strategy is PartitionStrategy.ROUNDING_ERROR:
            if codebook is None:
                raise ValueError("the rounding-error partition needs the tensor's codebook")
            chosen = _largest(-relative_rounding_error(w, codebook).reshape(-1)[free], k)
        else:
            chosen = _largest(magnitude, k)
    new_flat = flat_mask.copy()
    new_flat[free[chosen]] = True
    return new_flat.reshape(w.shape)


def relative_rounding_error(w: np.ndarray, codebook: Codebook) -> np.ndarray:
    """|w - Q(w)| / |w| per entry (Eq. 4 rounding), in [0, 1]: 0 on a codebook value (and for w = 0),
    1 for a weight that rounds to zero, below 1 for one clamped to ±2^n1."""
    w64 = np.asarray(w, dtype=np.float64)
    q = quantize(w64, codebook)
    magnitude = np.abs(w64)
    return np.divide(np.abs(w64 - q), magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)


def check_grows(old: np.ndarray, new: np.ndarray) -> None:
    """Raise ValueError if ``new`` un-freezes any entry that ``old`` froze."""
    old, new = np.asarray(old, dtype=bool), np.asarray(new, dtype=bool)
    if old.shape != new.shape:
        raise ValueError(f"mask shapes differ: {old.shape} then {new.shape}")
    lost = int(np.count_nonzero(old & ~new))
    if lost:
        raise ValueError(f"{lost} quantized entries would return to float; masks only grow")


def apply_step(w: np.ndarray, mask_old: np.ndarray, mask_new: np.ndarray, codebook: Codebook) -> np.ndarray:
    """New weights: entries in ``mask_new`` but not ``mask_old`` are rounded to P (Eq. 4, which
    clamps a weight that grew past the range to ±2^n1); every other entry is copied bit for bit."""
    w = np.asarray(w)
    check_grows(mask_old, mask_new)
    if w.shape != np.shape(mask_new):
        raise ValueError(f"weights {w.shape} and mask {np.shape(mask_new)} differ in shape")
    fresh = np.asarray(mask_new, dtype=bool) & ~np.asarray(mask_old, dtype=bool)
    out = w.copy()
    out[fresh] = quantize(w, codebook)[fresh]
    return out


def frozen_off_codebook(w: np.ndarray, mask: np.ndarray, codebook: Codebook) -> int:
    """How many frozen entries of ``w`` are not values of P (0 for a healthy tensor)."""
    return int(np.count_nonzero(np.asarray(mask, dtype=bool) & ~in_codebook(w, codebook)))
