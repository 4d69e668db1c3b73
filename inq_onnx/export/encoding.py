"""From a quantized tensor to what the exports store, pure numpy (no onnx).

A quantized tensor carries its codebook in its values: its largest magnitude (per tensor or per
channel) is exactly 2^n1, so ``compute_n1`` recovers n1, hence n2, and the codes follow. Every
step is checked: a value off the codebook, or one the float32 decode could not reproduce bit for
bit, raises ValueError with a sentence saying which value and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inq_onnx import codebook
from inq_onnx.export import decode_op


@dataclass(frozen=True)
class Encoded:
    """One tensor in exponent codes: ``codes`` int8 in its shape, ``n2`` int64 keepdims.

    ``negative_zero`` marks the entries that are -0.0 (float16 quantization leaves them where a
    negative weight underflows). Their code is 0; the compact stream gives them the otherwise
    unused code -2^(b-1), which the decode tables map to -0.0, so they too come back bit for bit.
    """

    bits: int
    codes: np.ndarray
    n2: np.ndarray
    channel_axes: tuple[int, ...]
    negative_zero: np.ndarray | None = None

    def stream_codes(self) -> np.ndarray:
        """The codes the compact stream stores (negative zeros as -2^(b-1))."""
        if self.negative_zero is None:
            return self.codes
        return np.where(self.negative_zero, np.int8(-(1 << (self.bits - 1))), self.codes).astype(np.int8)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def uniform(self) -> bool:
        """One n2 for the whole tensor (always so per tensor; possibly so per channel)."""
        return bool(np.all(self.n2 == self.n2.reshape(-1)[0]))

    @property
    def scale(self) -> np.ndarray:
        """2^n2 as float32: one value (shape [1] * rank) when uniform, else the keepdims shape.
        Zero where float32 cannot hold it (``check_exact`` catches that)."""
        n2 = self.n2.reshape(-1)[:1].reshape((1,) * self.n2.ndim) if self.uniform else self.n2
        return np.ldexp(np.float32(1.0), n2.astype(np.int32)).astype(np.float32)



def recover_codebook(q: np.ndarray, bits: int, channel_axes: tuple[int, ...]) -> codebook.Codebook:
    """The codebook of an already quantized tensor (n1 from its largest magnitudes).

    An all-zero tensor has no n1; any codebook encodes it (all codes 0), n1 = 0 is used.
    """
    axes = check_axes(channel_axes, np.ndim(q))
    q = np.asarray(q)
    if not np.all(np.isfinite(q)):
        raise ValueError("it holds NaN or infinite values")
    if not np.any(q):
        keepdims = tuple(d if i in axes else 1 for i, d in enumerate(q.shape))
        return codebook.Codebook(bits, np.zeros(keepdims, dtype=np.int64), axes)
    return codebook.make_codebook_blockwise(q, bits, axes)


def check_axes(channel_axes, ndim: int) -> tuple[int, ...]:
    axes = tuple(int(a) for a in channel_axes)
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(f"its channel axes {list(axes)} do not fit its rank {ndim}")
    return tuple(sorted({a % ndim for a in axes}))


def encode_tensor(q: np.ndarray, bits: int, channel_axes: tuple[int, ...] = ()) -> Encoded:
    """The codes and n2 of quantized tensor ``q``; ValueError if ``q`` is not on its codebook."""
    bits = codebook.check_bits(bits)
    q = np.asarray(q)
    book = recover_codebook(q, bits, channel_axes)
    codes = np.empty(q.shape, dtype=np.int8)
    for rows, part, part_book in codebook.blocks(q, book):
        inside = codebook.in_codebook(part, part_book)
        if not np.all(inside):
            off = int(np.sum(~codebook.in_codebook(q, book)))
            first = tuple(int(i) for i in np.argwhere(~codebook.in_codebook(q, book))[0])
            raise ValueError(f"{off} of {q.size} values are off its {bits}-bit codebook "
                             f"(first at index {list(first)}: {float(q[first])!r}), so it is not fully quantized")
        codes[rows] = codebook.encode(part, part_book).reshape(np.shape(part))
    negative_zero = (np.asarray(q) == 0) & np.signbit(q)
    return Encoded(bits=bits, codes=codes, n2=book.n2, channel_axes=book.channel_axes,
                   negative_zero=negative_zero if negative_zero.any() else None)


def decoded_values(encoded: Encoded, dtype=np.float32) -> np.ndarray:
    """What the compact graph computes for this tensor: UNITS[u] · 2^n2 in float32, cast to dtype."""
    unsigned = encoded.stream_codes().astype(np.int16) & ((1 << encoded.bits) - 1)
    return (decode_op.unit_table(encoded.bits)[unsigned] * encoded.scale).astype(dtype)


def check_exact(encoded: Encoded, q: np.ndarray) -> None:
    """Raise ValueError unless the float32 decode of the compact format gives ``q`` exactly."""
    q = np.ascontiguousarray(q)
    uint = np.dtype(f"u{q.dtype.itemsize}")
    for rows in codebook.row_blocks(q):
        n2 = encoded.n2[rows] if rows is not ... and encoded.n2.shape[0] > 1 else encoded.n2
        part = Encoded(encoded.bits, encoded.codes[rows], n2, encoded.channel_axes,
                       None if encoded.negative_zero is None else encoded.negative_zero[rows])
        decoded = decoded_values(part, q.dtype)
        same = decoded.view(uint) == q[rows].view(uint)  # bit for bit: -0.0 is not 0.0
        if not np.all(same):
            first = tuple(int(i) for i in np.argwhere(~same)[0])
            raise ValueError(f"the float32 decode would give {float(decoded[first])!r} instead of "
                             f"{float(q[rows][first])!r} (its exponent n2 = {int(encoded.n2.min())} is below "
                             "float32's range)")


def n2_listing(encoded: Encoded) -> int | list:
    """n2 as the manifest writes it: an int per tensor, nested lists over the channel axes."""
    if not encoded.channel_axes:
        return int(encoded.n2.reshape(-1)[0])
    shape = [encoded.shape[a] for a in encoded.channel_axes]
    return encoded.n2.reshape(shape).tolist()
