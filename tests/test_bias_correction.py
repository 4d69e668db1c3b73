"""Bias correction math against direct computation: the output mean shift of rounding."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from inq_onnx import bias_correction as bc


def test_module_imports_no_onnx():
    assert not re.search(r"^\s*(import|from)\s+onnx", Path(bc.__file__).read_text(), re.MULTILINE)


def conv2d(x: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """A plain 'valid' convolution, [N, C_in, H, W] * [C_out, C_in / group, kh, kw]."""
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    out = np.zeros((n, c_out, h - kh + 1, wd - kw + 1))
    per = c_out // group
    for o in range(c_out):
        g = o // per
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                out[:, o] += np.einsum("nchw,c->nhw", xs[:, :, i:i + out.shape[2], j:j + out.shape[3]], w[o, :, i, j])
    return out


@pytest.mark.parametrize("group", [1, 2])
def test_conv_shift_is_the_output_mean_shift_without_padding(group):
    rng = np.random.default_rng(0)
    x = rng.random((5, 4, 7, 6))
    w = rng.normal(size=(6, 4 // group, 3, 3))
    q = np.round(w * 2) / 2
    expected = (conv2d(x, q, group) - conv2d(x, w, group)).mean(axis=(0, 2, 3))
    # 'valid' convolution sees the border less often: compare with E[x] over the interior windows
    shift = bc.conv_shift(w, q, bc.channel_means(x), group)
    assert shift.shape == (6,)
    np.testing.assert_allclose(shift, expected, atol=0.15 * np.abs(expected).max())
    x_const = np.broadcast_to(rng.random((1, 4, 1, 1)), x.shape)  # constant over space: exact
    expected = (conv2d(x_const, q, group) - conv2d(x_const, w, group)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(bc.conv_shift(w, q, bc.channel_means(x_const), group), expected, rtol=1e-12)


@pytest.mark.parametrize("trans_b", [False, True])
def test_dense_shift_is_exact(trans_b):
    rng = np.random.default_rng(1)
    x = rng.random((3, 8, 5))  # leading axes are samples
    w = rng.normal(size=(4, 5) if trans_b else (5, 4))
    q = np.sign(w) * 2.0 ** np.round(np.log2(np.abs(w)))
    wm, qm = (w.T, q.T) if trans_b else (w, q)
    expected = 0.5 * (x @ qm - x @ wm).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(bc.dense_shift(w, q, bc.feature_means(x), trans_b, alpha=0.5), expected, rtol=1e-12)


def test_corrected_bias_keeps_shape_and_divides_by_beta():
    b = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(bc.corrected_bias(b, np.array([0.5, 1.0, -1.0]), beta=2.0), [[0.75, 1.5, 3.5]])
    np.testing.assert_array_equal(bc.corrected_bias(None, np.array([0.5, -1.0])), [-0.5, 1.0])


def test_when_it_applies():
    assert bc.applies("auto", paper_range=True, incremental=False)
    assert not bc.applies("auto", paper_range=False, incremental=False)
    assert not bc.applies("auto", paper_range=True, incremental=True)
    assert bc.applies("on", paper_range=False, incremental=True) and not bc.applies("off", paper_range=True, incremental=False)
    with pytest.raises(ValueError):
        bc.applies("sometimes", paper_range=True, incremental=False)


def test_a_bias_of_another_size_is_refused():
    with pytest.raises(ValueError, match="3 values for 2 output channels"):
        bc.corrected_bias(np.zeros(3), np.zeros(2))
