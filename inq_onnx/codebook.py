"""The INQ codebook, pure numpy: n1, n2, Eq. 4 rounding and the b-bit codes.

For a tensor (or one output channel of it) with s = max|W| and b bits:

    n1 = floor(log2(4 s / 3))            n2 = n1 + 1 - 2^(b-1) / 2
    P  = {0, ±2^n2, ..., ±2^n1}

Eq. 4 rounds |w| in [(α+β)/2, 3β/2) to β for adjacent α < β in P: so |w| < 2^(n2-1) -> 0,
an exact midpoint goes up, and |w| >= 1.5·2^n1 is clamped to 2^n1. A value ±2^(n2+k-1) has the
signed code ±k (1 <= k <= 2^(b-2)); code 0 is zero.

Exponents are found with ``frexp`` rather than ``log2`` so that every comparison is exact:
|w| = m·2^e with m in [0.5, 1) lies in [0.75·2^k, 1.5·2^k) for k = e if m >= 0.75, else e - 1.
That same k is floor(log2(4|w|/3)), so n1 is the rounding exponent of max|W|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

MIN_BITS, MAX_BITS = 2, 8
BLOCK = 1 << 20  # values per block when a large tensor is processed piecewise (no whole float64 copy)
CACHE_BLOCK = 1 << 18  # values per block of a pass that should stay in the CPU's cache (1 MB of float32)


def check_bits(bits: object) -> int:
    """Return ``bits`` as an int, or raise ValueError with the allowed range."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return int(bits)


def levels_per_sign(bits: int) -> int:
    """How many powers of two each sign has: 2^(b-2)."""
    return 1 << (check_bits(bits) - 2)


def rounding_exponent(x: np.ndarray) -> np.ndarray:
    """floor(log2(4|x|/3)) for x != 0, computed exactly; undefined (garbage) where x == 0."""
    mantissa, exponent = np.frexp(np.abs(np.asarray(x, dtype=np.float64)))
    return np.where(mantissa >= 0.75, exponent, exponent - 1).astype(np.int64)


def reduce_axes(ndim: int, channel_axes: tuple[int, ...]) -> tuple[int, ...]:
    """The axes a statistic is taken over: all but the (normalised) channel axes."""
    keep = {a % ndim for a in channel_axes} if ndim else set()
    return tuple(a for a in range(ndim) if a not in keep)


@dataclass(frozen=True)
class Codebook:
    """The codebook of one tensor: ``n1`` is a scalar (per-tensor) or one per channel.

    ``n1`` has the tensor's rank with size-1 reduced axes (numpy ``keepdims``), so it broadcasts
    against the tensor; ``channel_axes`` names the axes along which it varies.
    """

    bits: int
    n1: np.ndarray
    channel_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_bits(self.bits)
        object.__setattr__(self, "n1", np.asarray(self.n1, dtype=np.int64))

    @property
    def n2(self) -> np.ndarray:
        return self.n1 + 1 - levels_per_sign(self.bits)

    @property
    def per_channel(self) -> bool:
        return bool(self.channel_axes)

    def values(self) -> np.ndarray:
        """The sorted set P of a per-tensor codebook (2^(b-1) + 1 values)."""
        if self.n1.size != 1:
            raise ValueError("values() is defined for a per-tensor codebook only")
        exponents = np.arange(int(self.n2.reshape(())), int(self.n1.reshape(())) + 1)
        positive = np.ldexp(1.0, exponents)
        return np.concatenate([-positive[::-1], [0.0], positive])


def compute_n1(w: np.ndarray, channel_axes: tuple[int, ...] = ()) -> np.ndarray:
    """n1 per tensor, or per channel (keepdims shape). Channels that are all zero take the
    tensor's n1; a tensor that is all zero (or not finite) raises ValueError. n1 never exceeds
    the largest power of two ``w``'s float dtype holds (2^127 for float32): above 1.5·2^127 the
    rounding would give 2^128 = inf, so such weights clamp to 2^127 instead."""
    w = np.asarray(w)
    top = np.finfo(w.dtype).maxexp - 1 if np.issubdtype(w.dtype, np.floating) else None
    w = w.astype(np.float64, copy=False)
    if not np.all(np.isfinite(w)):
        raise ValueError("the tensor holds NaN or infinite values")
    s_all = np.max(np.abs(w)) if w.size else 0.0
    if s_all == 0.0:
        raise ValueError("the tensor is all zeros")
    n1_all = np.minimum(rounding_exponent(s_all), top) if top is not None else rounding_exponent(s_all)
    if not channel_axes:
        return np.asarray(n1_all, dtype=np.int64).reshape((1,) * w.ndim)
    s = np.max(np.abs(w), axis=reduce_axes(w.ndim, channel_axes), keepdims=True)
    n1 = np.where(s > 0, rounding_exponent(s), n1_all)
    return (np.minimum(n1, top) if top is not None else n1).astype(np.int64)


def make_codebook(w: np.ndarray, bits: int, channel_axes: tuple[int, ...] = ()) -> Codebook:
    """The codebook INQ computes once from the pre-trained tensor."""
    return Codebook(bits=check_bits(bits), n1=compute_n1(w, channel_axes), channel_axes=tuple(channel_axes))


def round_exponents(w: np.ndarray, codebook: Codebook) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4 as (sign, exponent): sign 0 marks a weight rounded to zero."""
    w = np.asarray(w, dtype=np.float64)
    n1, n2 = codebook.n1, codebook.n2
    k = rounding_exponent(w)
    below = np.abs(w) < np.ldexp(1.0, n2 - 1)
    k = np.clip(k, n2, n1)
    sign = np.where(below | (w == 0), 0, np.sign(w)).astype(np.int8)
    return sign, np.broadcast_to(k, w.shape)


def quantize(w: np.ndarray, codebook: Codebook) -> np.ndarray:
    """Round every entry of ``w`` to its nearest value in P (Eq. 4); keeps ``w``'s dtype.

    A power of two the dtype cannot hold (float16 below 2^-24) is stored as zero.
    """
    w = np.asarray(w)
    out = np.empty(w.shape, w.dtype)
    quantize_into(w, codebook, out)
    return out


def quantize_into(w: np.ndarray, codebook: Codebook, out: np.ndarray) -> int:
    """``quantize(w, codebook)`` written into ``out`` (``w``'s shape and dtype); returns how many
    values rounded to zero (so a caller needs no second pass over ``out`` to count them)."""
    w = np.asarray(w)
    if w.dtype == np.float32 and w.size and int(codebook.n2.min()) - 1 >= -126:
        return _quantize_float32_bits(w, codebook, out)
    sign, k = round_exponents(w, codebook)
    out[...] = sign * np.ldexp(1.0, k)
    return out.size - int(np.count_nonzero(out))  # with the powers of two the dtype cannot hold


def _quantize_float32_bits(w: np.ndarray, codebook: Codebook, out: np.ndarray) -> int:
    """Eq. 4 on float32's bit pattern, written into ``out``; returns the count of zeros.

    For |w| with exponent field E and mantissa field M, floor(log2(4|w|/3)) = E - 127 + (M >= 2^22):
    adding 2^22 to the pattern carries into E exactly then, and clearing M leaves 2^k. Clamping
    to [2^n2, 2^n1] and |w| < 2^(n2-1) (-> +0) compare as the bit patterns do. Zero and the
    subnormals lie below 2^(n2-1) >= 2^-126, so they go to +0 as in the float64 path.
    """
    def pattern(n: np.ndarray) -> np.ndarray:
        return ((n + 127).astype(np.uint32) << np.uint32(23)).astype(np.uint32)

    bits, magnitude = w.view(np.uint32), out.view(np.uint32)
    np.bitwise_and(bits, np.uint32(0x7FFFFFFF), out=magnitude)
    kept = magnitude >= pattern(codebook.n2 - 1)
    np.add(magnitude, np.uint32(0x00400000), out=magnitude)
    np.bitwise_and(magnitude, np.uint32(0x7F800000), out=magnitude)
    np.clip(magnitude, pattern(codebook.n2), pattern(codebook.n1), out=magnitude)
    np.bitwise_or(magnitude, np.bitwise_and(bits, np.uint32(0x80000000)), out=magnitude)
    np.multiply(magnitude, kept, out=magnitude)  # not copyto(where=): several times slower
    return kept.size - int(np.count_nonzero(kept))


def encode(q: np.ndarray, codebook: Codebook) -> np.ndarray:
    """The int8 signed codes of a quantized tensor; raises ValueError if a value is off P."""
    q = np.asarray(q, dtype=np.float64)
    n2 = codebook.n2
    mantissa, exponent = np.frexp(np.abs(q))
    k = exponent - 1  # |q| = 2^k exactly when mantissa == 0.5
    level = np.where(q == 0, 0, k - n2 + 1)
    off = (q != 0) & ((mantissa != 0.5) | (level < 1) | (level > levels_per_sign(codebook.bits)))
    if np.any(off):
        first = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(f"{int(off.sum())} values are not in the codebook (first at index {first}: {q[first]!r})")
    return (np.sign(q) * level).astype(np.int8)


def decode(codes: np.ndarray, codebook: Codebook, dtype: np.dtype = np.float32) -> np.ndarray:
    """Inverse of :func:`encode`: sign(c) · 2^(n2 + |c| - 1), zero for c == 0."""
    codes = np.asarray(codes, dtype=np.int64)
    magnitude = np.where(codes == 0, 0.0, np.ldexp(1.0, codebook.n2 + np.abs(codes) - 1))
    return (np.sign(codes) * magnitude).astype(dtype)


def in_codebook(w: np.ndarray, codebook: Codebook) -> np.ndarray:
    """Boolean mask: which entries of ``w`` are exactly a value of P."""
    q = np.asarray(w, dtype=np.float64)
    mantissa, exponent = np.frexp(np.abs(q))
    level = exponent - codebook.n2
    return (q == 0) | ((mantissa == 0.5) & (level >= 1) & (level <= levels_per_sign(codebook.bits)))


# Large tensors, a block of rows at a time: elementwise functions give the same values.

def make_codebook_blockwise(w: np.ndarray, bits: int, axes: tuple[int, ...] = ()) -> Codebook:
    """``make_codebook(w, bits, axes)``, from max|w| per channel taken a block at a time.

    n1 depends on the tensor only through those maxima (NaN and Inf propagate through them), so
    the codebook is the same while a large tensor is never copied to float64 whole."""
    if w.size <= BLOCK:
        return make_codebook(w, bits, axes)
    reduced = reduce_axes(w.ndim, axes)
    peaks = [np.maximum(np.max(part, axis=reduced, keepdims=True), -np.min(part, axis=reduced, keepdims=True))
             for part in (w[rows] for rows in row_blocks(w, min(BLOCK, CACHE_BLOCK)))]  # max|w|, no |w| copy
    peak = np.maximum.reduce(peaks) if 0 in reduced else np.concatenate(peaks)
    return make_codebook(peak, bits, axes)


def row_blocks(w: np.ndarray, size: int | None = None) -> Iterator[slice | type(Ellipsis)]:
    """Slices of axis 0 holding about ``size`` (default BLOCK) values each (``...``, all of it,
    when it is small)."""
    size = BLOCK if size is None else size
    if w.size <= size or w.ndim == 0:
        yield ...
        return
    step = max(1, size // max(1, w[0].size))
    for start in range(0, len(w), step):
        yield slice(start, start + step)


def blocks(w: np.ndarray, book: Codebook, size: int | None = None) -> Iterator[tuple[slice, np.ndarray, Codebook]]:
    """``w`` in blocks of rows (about ``size``, default BLOCK, values each), each with its slice of ``book``: an
    elementwise codebook function applied block by block gives the same values as on the whole
    tensor."""
    for rows in row_blocks(w, size):
        n1 = book.n1[rows] if rows is not ... and book.n1.shape[0] > 1 else book.n1
        yield rows, w[rows], Codebook(book.bits, n1, book.channel_axes)
