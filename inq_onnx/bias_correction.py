"""Bias correction (Nagel et al. 2019, "Data-Free Quantization", empirical variant), pure numpy.

Rounding a layer's weights W to W_q shifts the mean of its output: for y = W x + b,

    E[W_q x + b] - E[W x + b] = (W_q - W) E[x]

so subtracting that shift from the bias keeps every output channel's mean where it was:

    b' = b - (W_q - W) E[x]

E[x] is measured on a few samples by running the model before rounding. Per op:

- MatMul x @ W (W [K, N]) and Gemm alpha * x @ B + beta * C (B [K, N], or [N, K] with transB):
  shift[n] = alpha * sum_k (B_q - B)[k, n] E[x_k], and C' = C - shift / beta. Exact.
- Conv (W [C_out, C_in / group, k...]): shift[o] = sum_{c, kernel} (W_q - W)[o, c, ...] E[x_c'],
  with c' the input channel c of o's group and E[x_c'] the channel's mean over samples and
  space. Exact away from the borders; zero padding makes it approximate there.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["BiasCorrection", "applies", "channel_means", "feature_means", "conv_shift", "dense_shift",
           "corrected_bias"]


class BiasCorrection(enum.Enum):
    """When to correct biases. AUTO: one-shot with samples wherever the codebook's n1 is the
    paper's (by default 4 bits and more, and 3 bits per channel), where it won on the zoo
    (bench/bias_correction.py: lenet5, resnet8, vit_mnist and PP-OCR cls gained or tied at 4 and
    5 bits, resnet8 by 0.09-0.21); on top of the least-error n1 (2 bits, 3 bits per tensor) it
    lost on lenet5 and vit_mnist. Not after INQ steps: on lenet5 at 3 and 4 bits retraining did
    as well without it. ON: one-shot with samples and after every partition step. OFF: never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


def applies(choice: BiasCorrection | str, *, paper_range: bool, incremental: bool) -> bool:
    """Whether ``choice`` corrects biases, one-shot or after an INQ step, on codebooks whose n1
    is the paper's (``paper_range``) or the least-error one."""
    choice = BiasCorrection(choice)
    if choice is BiasCorrection.AUTO:
        return paper_range and not incremental
    return choice is BiasCorrection.ON


def channel_means(x: np.ndarray) -> np.ndarray:
    """Per-channel means of a Conv input [N, C, spatial...]: over samples and space."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=tuple(a for a in range(x.ndim) if a != 1))


def feature_means(x: np.ndarray) -> np.ndarray:
    """Per-feature means of a MatMul/Gemm input [..., K]: over every leading axis."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(-1, x.shape[-1]).mean(axis=0)


def conv_shift(w: np.ndarray, q: np.ndarray, mean_x: np.ndarray, group: int = 1) -> np.ndarray:
    """(W_q - W) E[x] per output channel of a Conv with ``group`` groups, [C_out]."""
    delta = np.asarray(q, np.float64) - np.asarray(w, np.float64)
    c_out, c_per_group = delta.shape[0], delta.shape[1]
    summed = delta.reshape(c_out, c_per_group, -1).sum(axis=2)  # over the kernel
    mean_x = np.asarray(mean_x, np.float64).reshape(group, c_per_group)
    group_of = np.arange(c_out) // (c_out // group)
    return np.einsum("oc,oc->o", summed, mean_x[group_of])


def dense_shift(w: np.ndarray, q: np.ndarray, mean_x: np.ndarray, trans_b: bool = False,
                alpha: float = 1.0) -> np.ndarray:
    """alpha (W_q - W)^T E[x] for x @ W (W [K, N]; [N, K] when ``trans_b``), [N]."""
    delta = np.asarray(q, np.float64) - np.asarray(w, np.float64)
    if trans_b:
        delta = delta.T
    return alpha * (np.asarray(mean_x, np.float64) @ delta)


def corrected_bias(bias: np.ndarray | None, shift: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """b - shift / beta in the bias's own shape (``None``: a new bias, b = 0, shaped like ``shift``)."""
    shift = np.asarray(shift, np.float64) / beta
    if bias is None:
        return -shift
    b = np.asarray(bias, np.float64)
    if b.size != shift.size:
        raise ValueError(f"a bias of {b.size} values for {shift.size} output channels")
    return (b.reshape(-1) - shift).reshape(b.shape)
