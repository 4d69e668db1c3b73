"""How n1 (the top of a codebook) is chosen, pure numpy: the paper's rule or least rounding error.

PAPER: n1 = floor(log2(4 s / 3)) with s = max|W| (Zhou et al. 2017, Eq. 2): the largest weight
decides. One outlier can then push the whole codebook up so that most weights round to zero.

MSE: n1 is the candidate in [n1_paper - SEARCH_DEPTH, n1_paper] with the least squared rounding
error ||W - Q_n1(W)||^2 (per tensor, or per channel), where Q_n1 is Eq. 4 with that n1: weights
at or above 1.5 * 2^n1 clamp to ±2^n1, as Eq. 4 already does. Still one integer n1 per tensor or
channel, so codes, sidecars and exports are unchanged. Ties go to the larger n1 (the paper's
when it is among the best). Since n1 <= n1_paper, the largest weight always rounds to ±2^n1, so
a quantized tensor still tells its n1 by its largest magnitude.

MAE: the same search, minimising sum |W - Q_n1(W)| instead. Outliers weigh linearly, not
quadratically, so it clamps them more readily. It is not a default: on the zoo it rescued
silero-vad per tensor (speech-decision agreement at 4 bits 0.30 -> 0.99 for silero_vad_half,
0.29 -> 0.97 for silero_vad, where a few outliers hold most of each encoder tensor's norm) but
lost to MSE or PAPER on the CNNs and the ViT.

AUTO (the default): without samples, MSE at 2 bits, and at 3 bits for per-tensor codebooks;
PAPER otherwise (``resolve_rule``). With samples, each weight's rule is judged by the model's
outputs instead, starting from these (``range_choice``).
That is where MSE won on the zoo of ../shared/models (one-shot agreement with the float model,
or output SQNR, bench/zoo_fidelity.py --range paper mse): at 3 bits per channel and at 4 bits it
lost as often as it won, and at 5 bits the two rules almost always give the same n1. Weight
error is not output error: clamping a layer's few largest weights costs more than their share
of ||W - Q(W)||^2 says once the codebook has enough levels to hold the bulk anyway.

The search is exact and needs one pass over the weights. Every boundary of Eq. 4, for every
candidate, is a power of two (the zero threshold 2^(n2-1)) or 1.5 times one (the midpoints), so
the magnitudes fall into half-octave bins [2^(e-1), 1.5 * 2^(e-1)) and [1.5 * 2^(e-1), 2^e) that
each round to a single value t for a given n1. Per bin we keep N, S1 = sum|w| and S2 = sum w^2
(in units of 2^n1_paper), and a candidate's squared error is sum over bins of S2 - 2 t S1 + t^2 N.
A bin never straddles its target (t is 0, a clamp below it, or 2^k at one of its edges), so its
absolute error is exactly |S1 - t N|.
"""

from __future__ import annotations

import enum

import numpy as np

from inq_onnx.codebook import Codebook, levels_per_sign, make_codebook_blockwise, reduce_axes, row_blocks

__all__ = ["RangeRule", "SEARCH_DEPTH", "resolve_rule", "make_codebook_by", "mse_n1", "least_error_n1",
           "candidate_errors"]

SEARCH_DEPTH = 8  # candidates n1_paper - 8 .. n1_paper: an outlier up to 2^8 times the bulk


class RangeRule(enum.Enum):
    PAPER = "paper"  # n1 from max|W| (the paper)
    MSE = "mse"  # n1 with the least squared rounding error, outliers clamped
    MAE = "mae"  # n1 with the least absolute rounding error (clamps outliers more readily)
    AUTO = "auto"  # by the outputs with samples (range_choice); else MSE where it won on the zoo, else PAPER


def resolve_rule(rule: RangeRule | str, bits: int, per_channel: bool) -> RangeRule:
    """PAPER, MSE or MAE: what ``rule`` means for a codebook of ``bits`` bits, per channel or not."""
    rule = RangeRule(rule)
    if rule is not RangeRule.AUTO:
        return rule
    return RangeRule.MSE if bits == 2 or (bits == 3 and not per_channel) else RangeRule.PAPER


def make_codebook_by(w: np.ndarray, bits: int, axes: tuple[int, ...] = (), rule: RangeRule = RangeRule.PAPER,
                     depth: int = SEARCH_DEPTH) -> Codebook:
    """The codebook of ``w`` with n1 chosen by ``rule`` (AUTO: resolved for these ``bits`` and
    ``axes``, see :func:`resolve_rule`); raises ValueError like ``make_codebook``."""
    paper = make_codebook_blockwise(w, bits, axes)
    rule = resolve_rule(rule, bits, bool(axes))
    if rule is RangeRule.PAPER:
        return paper
    norm = 1 if rule is RangeRule.MAE else 2
    return Codebook(paper.bits, least_error_n1(w, paper, depth, norm), paper.channel_axes)


def mse_n1(w: np.ndarray, paper: Codebook, depth: int = SEARCH_DEPTH) -> np.ndarray:
    """n1 (keepdims, like ``paper.n1``) minimising the squared Eq. 4 error among the ``depth + 1``
    candidates at and below the paper's n1."""
    return least_error_n1(w, paper, depth, norm=2)


def least_error_n1(w: np.ndarray, paper: Codebook, depth: int = SEARCH_DEPTH, norm: int = 2) -> np.ndarray:
    """n1 minimising sum |W - Q(W)|^norm (norm 1 or 2) among the candidates at and below the paper's."""
    errors = candidate_errors(w, paper, depth, norm)  # [depth + 1, channels], candidate j is n1_paper - j
    errors[1:][lowest_exponent(w) > smallest_exponents(paper, depth)[1:]] = np.inf  # 2^n2 would underflow w's dtype
    best = np.argmin(errors, axis=0)  # the first minimum: the largest n1 wins a tie
    return paper.n1 - best.reshape(paper.n1.shape)


def lowest_exponent(w: np.ndarray) -> int:
    """The exponent of the smallest positive value ``w``'s float dtype holds (-149 for float32)."""
    dtype = w.dtype if np.issubdtype(np.asarray(w).dtype, np.floating) else np.dtype(np.float64)
    return int(np.frexp(np.finfo(dtype).smallest_subnormal)[1]) - 1


def smallest_exponents(paper: Codebook, depth: int) -> np.ndarray:
    """n2 of every candidate n1_paper - j, [depth + 1, channels]."""
    n2 = paper.n2.astype(np.int64).ravel()
    return n2[None, :] - np.arange(depth + 1)[:, None]


def candidate_errors(w: np.ndarray, paper: Codebook, depth: int = SEARCH_DEPTH, norm: int = 2) -> np.ndarray:
    """Rounding error sum |W - Q(W)|^norm per candidate n1 = n1_paper - j (rows, j = 0..depth) and
    channel (columns, in the order of ``paper.n1.ravel()``), in units of 2^(norm n1_paper)."""
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    levels = levels_per_sign(paper.bits)
    low = 2 * (1 - levels - depth) - 1  # relative bin below every candidate's zero threshold
    count, s1, s2 = bin_sums(w, paper, low)
    targets = bin_targets(levels, depth, low)  # [depth + 1, bins]
    if norm == 1:  # per bin |S1 - t N|: a bin lies wholly above or below its target
        return np.abs(s1[None, :, :] - targets[:, None, :] * count[None, :, :]).sum(axis=2)
    return s2.sum(axis=1)[None, :] - 2.0 * targets @ s1.T + (targets**2) @ count.T


def bin_targets(levels: int, depth: int, low: int) -> np.ndarray:
    """t / 2^n1_paper for each candidate j and relative bin r = low..2 (see :func:`bin_sums`)."""
    r = np.arange(low, 3)
    exponent = (r - 1) // 2  # the bin's own rounding exponent, relative to n1_paper
    rows = []
    for j in range(depth + 1):
        n1, n2 = -j, 1 - levels - j
        rows.append(np.where(r < 2 * n2, 0.0, np.ldexp(1.0, np.clip(exponent, n2, n1))))
    return np.array(rows)


def bin_sums(w: np.ndarray, paper: Codebook, low: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, sum|w| and sum w^2 per channel and half-octave bin, |w| in units of 2^n1_paper.

    |w| = m 2^e (m in [0.5, 1)) is in bin h = 2e + [m >= 0.75]; r = h - 2 n1_paper is clipped to
    ``low``..2 (below ``low``: zero for every candidate; above 2 only when n1 was capped by the
    dtype, and such weights clamp to 2^n1 for every candidate). Exact zeros go to ``low``."""
    shape = paper.n1.shape
    channels = int(np.prod(shape, dtype=np.int64))
    index_of = np.arange(channels).reshape(shape)
    bins = 3 - low
    count, s1, s2 = (np.zeros(channels * bins) for _ in range(3))
    axes = paper.channel_axes
    along_rows = bool(axes) and 0 not in reduce_axes(np.ndim(w), axes)
    for rows in row_blocks(w):
        block = np.abs(np.asarray(w[rows], dtype=np.float64))
        n1 = paper.n1[rows] if along_rows and rows is not ... else paper.n1
        chan = index_of[rows] if along_rows and rows is not ... else index_of
        scaled = np.ldexp(block, -n1)
        mantissa, exponent = np.frexp(scaled)
        r = np.clip(2 * exponent + (mantissa >= 0.75), low, 2)
        r = np.where(block == 0, low, r)
        flat = (np.broadcast_to(chan, block.shape) * bins + (r - low)).ravel()
        scaled = scaled.ravel()
        count += np.bincount(flat, minlength=channels * bins)
        s1 += np.bincount(flat, weights=scaled, minlength=channels * bins)
        s2 += np.bincount(flat, weights=scaled * scaled, minlength=channels * bins)
    return count.reshape(channels, bins), s1.reshape(channels, bins), s2.reshape(channels, bins)
