"""The learning-rate search and the step guard: the pure decisions."""

import math

import numpy as np
import pytest

from inq_onnx.data import Samples
from inq_onnx.train.lr_search import (FAR_FACTOR, HOLDOUT_MAX, MIN_TRIAL_UPDATES, SEARCH_SHARE, SGD_GRID, GuardState,
                                      check_candidates, check_updates,
                                      Trial, capped, choose_lr, far_above, holdout_size, keep_best, padded_batches,
                                      retry_lr, split_holdout, trial_updates)


def test_the_lowest_held_out_loss_wins():
    assert choose_lr([Trial(1e-3, 0.5), Trial(1e-2, 0.2), Trial(3e-2, 0.3)]) == 1e-2


def test_a_near_tie_goes_to_the_smaller_rate():
    assert choose_lr([Trial(1e-3, 0.5), Trial(1e-2, 0.201), Trial(3e-2, 0.2)]) == 1e-2
    assert choose_lr([Trial(1e-2, 0.25), Trial(3e-2, 0.2)]) == 3e-2  # 25 % apart is no tie


def test_diverged_trials_never_win_and_all_diverged_gives_the_smallest_rate():
    assert choose_lr([Trial(1e-3, 0.5), Trial(1e-2, math.inf)]) == 1e-3
    assert choose_lr([Trial(3e-3, math.inf), Trial(1e-3, math.inf)]) == 1e-3


def test_trials_take_a_bounded_share_of_the_run():
    grid = len(SGD_GRID)
    big = trial_updates(1000, 9000, grid)
    assert big == int(SEARCH_SHARE * 9000 / grid)
    assert big * grid + 8 * 2 * check_updates(1000) <= 0.15 * 9000  # the search, then a check at 8 later steps
    assert trial_updates(1000, 100, grid) == MIN_TRIAL_UPDATES  # a tiny run still gets a meaningful trial
    assert trial_updates(10, 100, grid) == 10  # never more than one step's updates


def test_far_above_the_start():
    assert far_above(float("nan"), 1.0) and far_above(math.inf, 1.0)
    assert far_above(FAR_FACTOR * 0.4 + 0.01, 0.4)
    assert not far_above(0.5, 0.4) and not far_above(0.0, 0.0)


def test_a_try_that_passes_is_kept_else_the_step_keeps_its_start():
    tries = [{"lr": 0.03, "loss": None}, {"lr": 0.01, "loss": 0.9}, {"lr": 0.003, "loss": 0.4}]
    assert keep_best(0.5, tries) == 2
    assert keep_best(0.3, tries) == 2  # slightly above the start, but it passes the guard: trained, kept
    assert keep_best(0.2, tries) is None  # every try far above: the start is kept
    assert keep_best(0.3, [{"loss": 0.9}, {"loss": 0.5}, {"loss": 0.6}]) is None
    assert retry_lr(0.03) == pytest.approx(0.01)


def test_guard_state_round_trips_through_json():
    import json

    state = GuardState(0.01, 0.7, ({"lr": 0.03, "loss": None, "outcome": "diverged"},), {"chosen": 0.03})
    assert GuardState.from_dict(json.loads(json.dumps(state.as_dict()))) == state


def sorted_samples(n=1000, classes=10):
    labels = np.repeat(np.arange(classes), n // classes)  # sorted by class, as the shared data files are
    x = np.arange(n, dtype=np.float32)[:, None]
    return Samples({"x": x}, labels, "train.npz", {"x": 0})


def test_the_held_out_slice_is_seeded_disjoint_and_spans_the_classes():
    samples = sorted_samples()
    kept, held = split_holdout(samples, 32, seed=0)
    again_kept, again_held = split_holdout(samples, 32, seed=0)
    assert len(held) == 100 and len(kept) == 900
    np.testing.assert_array_equal(held.inputs["x"], again_held.inputs["x"])
    assert not set(held.inputs["x"][:, 0]) & set(kept.inputs["x"][:, 0])
    np.testing.assert_array_equal(held.labels, held.inputs["x"][:, 0].astype(int) // 100)  # labels follow
    assert len(set(held.labels)) == 10
    assert "held out" in held.source


def test_no_slice_when_too_few_samples_would_remain():
    assert holdout_size(70, 32) == 0 and holdout_size(100, 32) == 10
    assert holdout_size(10**6, 32) == HOLDOUT_MAX
    kept, held = split_holdout(sorted_samples(60, 10), 32, seed=0)
    assert held is None and len(kept) == 60


def test_capped_draws_a_seeded_subset_across_the_file():
    samples = sorted_samples(3000)
    sub = capped(samples, seed=1, limit=500)
    assert len(sub) == 500 and len(set(sub.labels)) == 10 and "500 random samples" in sub.source
    assert capped(samples, seed=1, limit=5000) is samples


def test_padded_batches_cover_every_sample_in_full_batches():
    batches = padded_batches(10, 4)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert set(np.concatenate(batches)) == set(range(10))
    assert list(batches[-1]) == [8, 9, 0, 1]


def test_a_later_step_checks_the_rate_against_a_larger_one_within_the_grid():
    assert check_candidates(1e-3, SGD_GRID) == (1e-3, 3e-3)
    assert check_candidates(1e-2, SGD_GRID) == (1e-2, pytest.approx(3e-2))
    assert check_candidates(3e-2, SGD_GRID) == (3e-2,)  # the top of the grid: nothing to check
    assert check_updates(1000) == 30 and check_updates(300) == 0  # too short a step for a check within its share


def test_the_step_outcome_keeps_the_try_that_passed_and_carries_its_rate():
    from inq_onnx.train.lr_search import step_outcome

    tries = ({"lr": 0.03, "loss": None, "train_loss": None, "outcome": "diverged"},
             {"lr": 0.01, "loss": 0.3, "train_loss": 0.2, "outcome": "done"})
    keep, run_lr, entry = step_outcome(GuardState(0.01, 0.5, tries, {"chosen": 0.03}))
    assert (keep, run_lr) == (1, 0.01)
    assert entry["lr"] == 0.03 and entry["val_loss"] == 0.3 and entry["tries"] == list(tries) and entry["lr_search"]
    keep, run_lr, entry = step_outcome(GuardState(0.01, 0.15, tries))  # every try far above: the start
    assert keep is None and run_lr == 0.01 and entry["val_loss"] == 0.15 and "lr_search" not in entry
    keep, _, entry = step_outcome(GuardState(0.01, 0.5, tries[1:]))
    assert keep == 0 and "tries" not in entry  # one good try: nothing more to say
