"""The learning-rate search and the step guard: the pure decisions."""

import math

import numpy as np
import pytest

from inq_onnx.data import Samples
from inq_onnx.train.lr_search import (ADAMW, ADAMW_GRID, FAR_FACTOR, HOLDOUT_MAX, MIN_TRIAL_UPDATES, SEARCH_SHARE,
                                      SGD, SGD_GRID, GuardState, Rate, Trial, capped, check_candidates,
                                      check_updates, choose_rate, far_above, grid_for, holdout_size, keep_best,
                                      padded_batches, retry_rate, split_holdout, trial_updates)


def sgd(lr, loss):
    return Trial(Rate(SGD, lr), loss)


def adamw(lr, loss):
    return Trial(Rate(ADAMW, lr), loss)


def test_the_lowest_held_out_loss_wins():
    assert choose_rate([sgd(1e-3, 0.5), sgd(1e-2, 0.2), sgd(3e-2, 0.3)]) == Rate(SGD, 1e-2)
    assert choose_rate([sgd(1e-2, 0.2), adamw(1e-4, 0.1), adamw(1e-3, 0.3)]) == Rate(ADAMW, 1e-4)


def test_a_near_tie_goes_to_sgd_then_to_the_smaller_rate():
    assert choose_rate([sgd(1e-3, 0.5), sgd(1e-2, 0.201), sgd(3e-2, 0.2)]) == Rate(SGD, 1e-2)
    assert choose_rate([sgd(1e-2, 0.25), sgd(3e-2, 0.2)]) == Rate(SGD, 3e-2)  # 25 % apart is no tie
    assert choose_rate([adamw(3e-5, 0.2), sgd(1e-2, 0.201)]) == Rate(SGD, 1e-2)  # the paper's optimizer first


def test_diverged_trials_never_win_and_all_diverged_gives_the_smallest_rate():
    assert choose_rate([sgd(1e-3, 0.5), sgd(1e-2, math.inf)]) == Rate(SGD, 1e-3)
    assert choose_rate([sgd(3e-3, math.inf), sgd(1e-3, math.inf), adamw(3e-5, math.inf)]) == Rate(SGD, 1e-3)


def test_the_search_grid_holds_each_optimizer_s_rates():
    assert grid_for((SGD,)) == tuple(Rate(SGD, lr) for lr in SGD_GRID)
    both = grid_for((SGD, ADAMW))
    assert len(both) == len(SGD_GRID) + len(ADAMW_GRID) and {r.optimizer for r in both} == {SGD, ADAMW}


def test_a_winner_at_an_end_of_its_grid_is_tried_past_it():
    from inq_onnx.train.lr_search import beyond

    tried = list(grid_for((SGD, ADAMW)))
    assert beyond(Rate(SGD, max(SGD_GRID)), tried) == Rate(SGD, pytest.approx(3 * max(SGD_GRID)))
    assert beyond(Rate(ADAMW, min(ADAMW_GRID)), tried) == Rate(ADAMW, pytest.approx(min(ADAMW_GRID) / 3))
    assert beyond(Rate(SGD, SGD_GRID[2]), tried) is None  # inside its grid: nothing to extend
    assert beyond(Rate(SGD, 0.09), tried + [Rate(SGD, 0.09)]) == Rate(SGD, pytest.approx(0.27))  # and on


def test_the_run_off_trains_a_quarter_of_the_step_and_longer_than_a_trial():
    from inq_onnx.train.lr_search import RUNOFF_FACTOR, RUNOFF_SHARE, runoff_updates

    assert runoff_updates(1000, 20) == int(RUNOFF_SHARE * 1000)
    assert runoff_updates(100, 20) == RUNOFF_FACTOR * 20  # a short step: still longer than the trials
    assert runoff_updates(40, 20) == 40  # never more than the step


def test_trials_take_a_bounded_share_of_the_run():
    grid = len(grid_for((SGD, ADAMW)))
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
    assert retry_rate(Rate(ADAMW, 3e-4)) == Rate(ADAMW, pytest.approx(1e-4))


def test_guard_state_round_trips_through_json():
    import json

    state = GuardState(0.01, 0.7, ({"lr": 0.03, "loss": None, "outcome": "diverged"},), {"chosen": 0.03}, ADAMW)
    assert GuardState.from_dict(json.loads(json.dumps(state.as_dict()))) == state
    older = {k: v for k, v in state.as_dict().items() if k != "optimizer"}  # a checkpoint from before
    assert GuardState.from_dict(older).optimizer == SGD


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
    assert check_candidates(Rate(SGD, 1e-3)) == (Rate(SGD, 1e-3), Rate(SGD, 3e-3))
    assert check_candidates(Rate(SGD, 1e-2)) == (Rate(SGD, 1e-2), Rate(SGD, pytest.approx(3e-2)))
    assert check_candidates(Rate(SGD, 3e-2)) == (Rate(SGD, 3e-2),)  # the top of the grid: nothing to check
    assert check_candidates(Rate(ADAMW, 1e-3)) == (Rate(ADAMW, 1e-3),)  # each optimizer within its own grid
    assert check_candidates(Rate(ADAMW, 3e-5))[1] == Rate(ADAMW, pytest.approx(9e-5))
    assert check_updates(1000) == 30 and check_updates(300) == 0  # too short a step for a check within its share


def test_the_step_outcome_keeps_the_try_that_passed_and_carries_its_rate():
    from inq_onnx.train.lr_search import step_outcome

    tries = ({"lr": 0.03, "loss": None, "train_loss": None, "outcome": "diverged"},
             {"lr": 0.01, "loss": 0.3, "train_loss": 0.2, "outcome": "done"})
    keep, rate, entry = step_outcome(GuardState(0.01, 0.5, tries, {"chosen": 0.03}))
    assert (keep, rate) == (1, Rate(SGD, 0.01))
    assert entry["lr"] == 0.03 and entry["optimizer"] == SGD and entry["val_loss"] == 0.3 and entry["tries"] == list(tries) and entry["lr_search"]
    keep, rate, entry = step_outcome(GuardState(0.01, 0.15, tries, optimizer=ADAMW))  # every try far above: the start
    assert keep is None and rate == Rate(ADAMW, 0.01) and entry["val_loss"] == 0.15 and "lr_search" not in entry
    keep, _, entry = step_outcome(GuardState(0.01, 0.5, tries[1:]))
    assert keep == 0 and "tries" not in entry  # one good try: nothing more to say
