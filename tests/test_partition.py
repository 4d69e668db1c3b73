"""Partition (Algorithm 1, step 1) and the quantize step that follows it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inq_onnx.codebook import in_codebook, make_codebook, quantize
from inq_onnx.partition import (
    PartitionStrategy, apply_step, check_grows, frozen_off_codebook, grow_mask, initial_mask,
    partition_rng, target_count,
)
from inq_onnx.schedule import PAPER_SCHEDULES

MAG, RND = PartitionStrategy.MAGNITUDE, PartitionStrategy.RANDOM


def test_partition_module_imports_no_onnx():
    import inq_onnx.partition as module

    assert not re.search(r"^\s*(import|from)\s+onnx", Path(module.__file__).read_text(), re.MULTILINE)


def test_target_count_applies_sigma_to_the_non_pruned_weights():
    assert target_count(10, 0, 0.3) == 3
    assert target_count(10, 0, 0.25) == 3  # 2.5 rounds half up
    assert target_count(100, 90, 0.5) == 95
    assert target_count(7, 3, 1.0) == 7
    with pytest.raises(ValueError):
        target_count(5, 6, 0.5)


def test_largest_magnitudes_are_chosen_and_ties_go_to_the_lower_index():
    w = np.array([0.1, -0.5, 0.5, 0.3, -0.5, 0.2], np.float32)
    mask = grow_mask(w, initial_mask(w), 0.5, n_pruned=0)
    assert mask.tolist() == [False, True, True, False, True, False]
    mask = grow_mask(w, np.zeros(6, bool), 1 / 3, n_pruned=0)
    assert mask.tolist() == [False, True, True, False, False, False]


def test_many_ties_do_not_quantize_the_whole_tensor():
    w = np.zeros(1000, np.float32)
    w[::100] = 1.0  # 10 non-zero, 990 tied at 0 (not pruned here: caller says n_pruned=0)
    mask = grow_mask(w, np.zeros(w.shape, bool), 0.2, n_pruned=0)
    assert np.count_nonzero(mask) == 200
    assert mask[::100].all()
    assert np.flatnonzero(mask & (w == 0)).tolist() == [i for i in range(1000) if i % 100][:190]


def test_pruned_zeros_are_frozen_from_the_start_and_sigma_counts_the_rest():
    w = np.array([[0.0, 0.4, 0.0], [-0.9, 0.0, 0.2]], np.float32)
    mask0 = initial_mask(w)
    assert mask0.tolist() == [[True, False, True], [False, True, False]]
    mask1 = grow_mask(w, mask0, 1 / 3, n_pruned=3)
    assert mask1.tolist() == [[True, False, True], [True, True, False]]


def test_masks_never_shrink():
    w = np.arange(6, dtype=np.float32)
    full = np.ones(6, bool)
    with pytest.raises(ValueError, match="masks only grow"):
        grow_mask(w, full, 0.5, n_pruned=0)
    with pytest.raises(ValueError, match="masks only grow"):
        check_grows(full, ~full)
    with pytest.raises(ValueError, match="masks only grow"):
        apply_step(w, full, ~full, make_codebook(w, 4))


def test_bad_inputs_raise():
    w = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="bool array"):
        grow_mask(w, np.zeros(4, np.uint8), 0.5, n_pruned=0)
    with pytest.raises(ValueError, match="NaN"):
        grow_mask(np.array([1.0, np.nan, 2.0, 3.0]), np.zeros(4, bool), 0.5, n_pruned=0)
    with pytest.raises(ValueError, match="rng"):
        grow_mask(w, np.zeros(4, bool), 0.5, n_pruned=0, strategy=RND)


def test_random_partition_is_reproducible_from_seed_name_and_step():
    w = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    empty = np.zeros(w.shape, bool)

    def draw(seed, name, step):
        return grow_mask(w, empty, 0.3, n_pruned=0, strategy=RND, rng=partition_rng(seed, name, step))

    first = draw(7, "conv1.weight", 0)
    assert np.count_nonzero(first) == 1500
    assert np.array_equal(first, draw(7, "conv1.weight", 0))
    for other in [draw(8, "conv1.weight", 0), draw(7, "conv2.weight", 0), draw(7, "conv1.weight", 1)]:
        assert not np.array_equal(first, other)
    magnitude = grow_mask(w, empty, 0.3, n_pruned=0)
    assert not np.array_equal(first, magnitude)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 300), elements=st.sampled_from([0.0, -0.5, 0.5, 0.25, -1.0, 2.0])),
    st.sampled_from(sorted(PAPER_SCHEDULES)),
    st.sampled_from([MAG, RND]),
)
def test_every_step_hits_the_count_exactly_and_masks_only_grow(w, bits, strategy):
    mask = initial_mask(w)
    n_pruned = int(mask.sum())
    for step, sigma in enumerate(PAPER_SCHEDULES[bits]):
        new = grow_mask(w, mask, sigma, n_pruned=n_pruned, strategy=strategy, rng=partition_rng(3, "t", step))
        assert np.count_nonzero(new) == target_count(w.size, n_pruned, sigma)
        assert not np.any(mask & ~new)
        if strategy is MAG and (~new).any() and (new & ~mask).any():
            chosen, left = new & ~mask, ~new
            threshold = np.abs(w[chosen]).min()
            assert threshold >= np.abs(w[left]).max()
            tied = np.abs(w) == threshold
            if (tied & left).any():  # ties at the threshold go to the lower flat index
                assert np.flatnonzero(tied & chosen).max() < np.flatnonzero(tied & left).min()
        mask = new
    assert mask.all()


def test_apply_step_quantizes_new_entries_and_keeps_old_ones_bit_identical():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    w0[1, 1, 1, 1], w0[2, 2, 2, 2] = -0.0, 0.0  # pruned zeros, one of them negative
    book = make_codebook(w0, 4, channel_axes=(0,))
    mask0 = initial_mask(w0)
    mask1 = grow_mask(w0, mask0, 0.5, n_pruned=2)
    w1 = apply_step(w0, mask0, mask1, book)
    assert np.array_equal(w1[mask1], quantize(w0, book)[mask1])
    assert np.array_equal(w1[~mask1].view(np.uint32), w0[~mask1].view(np.uint32))
    assert np.signbit(w1[1, 1, 1, 1])
    w1[~mask1] *= 1.01  # retraining moves only the float group
    assert frozen_off_codebook(w1, mask1, book) == 0 and frozen_off_codebook(w1, ~mask0, book) > 0
    mask2 = grow_mask(w1, mask1, 1.0, n_pruned=2)
    w2 = apply_step(w1, mask1, mask2, book)
    assert np.array_equal(w2[mask1].view(np.uint32), w1[mask1].view(np.uint32))
    assert in_codebook(w2, book).all() and frozen_off_codebook(w2, mask2, book) == 0


def test_a_weight_that_grew_past_the_range_is_clamped_not_zeroed():
    w = np.array([0.9, -0.3, 0.1, 0.05], np.float32)
    book = make_codebook(w, 3)  # n1 = floor(log2(4*0.9/3)) = 0: P = {0, ±0.5, ±1}
    mask1 = np.array([True, False, False, False])
    w[1] = -7.0
    w2 = apply_step(w, mask1, np.ones(4, bool), book)
    assert np.array_equal(w2, np.array([0.9, -1.0, 0.0, 0.0], np.float32))


def test_large_tensors_with_ties_at_the_threshold_partition_exactly():
    # Speed is the benchmarks' business (machines are shared): this checks the tie handling only.
    w = np.random.default_rng(0).random(3_000_000, dtype=np.float32)
    w[::3] = 0.5  # a third of the tensor ties at the threshold
    mask = grow_mask(w, np.zeros(w.shape, bool), 0.5, n_pruned=0)
    assert np.count_nonzero(mask) == 1_500_000
    assert np.count_nonzero(mask & (w == 0.5)) == 1_500_000 - np.count_nonzero(w > 0.5)


def test_rounding_error_partition_takes_the_smallest_relative_error_first_ties_to_the_lower_index():
    from inq_onnx.partition import relative_rounding_error

    book = make_codebook(np.array([1.0]), 3)  # P = {0, ±0.5, ±1}
    w = np.array([0.9, 0.5, -0.26, 0.7, 0.1, -1.0, 1.0, 0.55], np.float32)
    error = relative_rounding_error(w, book)
    np.testing.assert_allclose(error, [0.1 / 0.9, 0, 0.24 / 0.26, 0.2 / 0.7, 1, 0, 0, 0.05 / 0.55], rtol=1e-6)
    err = PartitionStrategy.ROUNDING_ERROR
    mask = grow_mask(w, np.zeros(8, bool), 0.25, n_pruned=0, strategy=err, codebook=book)
    assert np.flatnonzero(mask).tolist() == [1, 5]  # three exact values; ties go to the lower index
    mask = grow_mask(w, mask, 0.625, n_pruned=0, strategy=err, codebook=book)
    assert np.flatnonzero(mask).tolist() == [0, 1, 5, 6, 7]
    with pytest.raises(ValueError, match="needs the tensor's codebook"):
        grow_mask(w, np.zeros(8, bool), 0.5, n_pruned=0, strategy=err)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 40), elements=st.floats(-4, 4, width=32)), st.floats(0, 1))
def test_rounding_error_partition_counts_are_exact(w, sigma):
    if not np.any(w):
        return
    book = make_codebook(w, 4)
    mask0 = initial_mask(w)
    mask = grow_mask(w, mask0, sigma, n_pruned=int(mask0.sum()), strategy=PartitionStrategy.ROUNDING_ERROR, codebook=book)
    assert mask.sum() == target_count(w.size, int(mask0.sum()), sigma) and np.all(mask[mask0])
