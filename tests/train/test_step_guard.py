"""The learning-rate search and the step guard on a real (fixture) retraining run."""

import math

import numpy as np
import onnx
import pytest

from inq_onnx.data import Samples, load_samples
from inq_onnx.graph.tensors import read_tensor
from inq_onnx.incremental import InqOptions, partition_step, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.train.checkpoint import load_checkpoint
from inq_onnx.train.evaluate import below_one_shot
from inq_onnx.train.loop import retrain
from inq_onnx.train.run_log import read_log
from inq_onnx.train.lr_search import (ADAMW, GRIDS, MAX_RETRIES, RETRY_DIVISOR, SGD, Rate, Trial, check_updates,
                                      choose_rate)
from inq_onnx.train.options import TrainOptions
from inq_onnx.verify import fidelity, off_codebook
from tests.conftest import FIXTURE

INQ = InqOptions(QuantizeOptions(bits=4, rounding="nearest"), schedule=(0.5, 0.8, 1.0))  # the start is a plain partition step


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    d = np.load(FIXTURE.parent / "digits.npz")
    for split, key in (("train", "train"), ("val", "test")):
        np.savez(folder / f"{split}.npz", input=d[f"x_{key}"].astype(np.float32) / 16, labels=d[f"y_{key}"])
    model = onnx.load(str(FIXTURE))
    return model, load_samples(folder / "train.npz", model), load_samples(folder / "val.npz", model)


def weights(model):
    return {k: read_tensor(model, s).copy() for k, s in weight_sites(model, INQ.quantize).items()}


def test_the_default_run_searches_the_rate_once_and_keeps_it(digits, tmp_path):
    model, train, val = digits
    events = []
    retrain(model, train, inq=INQ, options=TrainOptions(epochs_per_step=16, batch_size=64), run_dir=tmp_path, val=val,
            on_event=lambda kind, info: events.append((kind, info)))
    steps = [info for kind, info in events if kind == "step"]
    records = read_log(tmp_path)
    search = records[1]["lr_search"]
    tried = [(t["optimizer"], t["lr"]) for t in search["trials"]]  # --optimizer auto: both optimizers' grids
    grids = [(o, lr) for o in (SGD, ADAMW) for lr in GRIDS[o]]
    assert tried[:len(grids)] == grids
    for optimizer, lr in tried[len(grids):]:  # past an end of its grid, only where the winner sat there
        assert lr > max(GRIDS[optimizer]) or lr < min(GRIDS[optimizer])
    assert (search["optimizer"], search["chosen"]) in tried
    assert search["kind"] == "search" and records[1]["lr"] == search["chosen"]
    assert records[1]["optimizer"] == search["optimizer"]
    winner = choose_rate([Trial(Rate(t["optimizer"], t["lr"]), math.inf if t["loss"] is None else t["loss"])
                          for t in search["trials"]])
    if winner.optimizer == ADAMW:  # SGD lost the short trials: each one's winner trains longer, the lower loss wins
        finals = search["runoff"]
        assert [t["optimizer"] for t in finals] == [SGD, ADAMW] and search["runoff_updates"] > search["updates"]
        best = choose_rate([Trial(Rate(t["optimizer"], t["lr"]), t["loss"]) for t in finals])
        assert (search["optimizer"], search["chosen"]) == (best.optimizer, best.lr)
    else:
        assert "runoff" not in search and (search["optimizer"], search["chosen"]) == (SGD, winner.lr)
    grid = GRIDS[search["optimizer"]]
    searches = [info for kind, info in events if kind == "lr_search"]
    assert [s["kind"] for s in searches] == ["search"] + ["check"] * (len(searches) - 1)
    previous = records[1]["lr"] if "tries" not in records[1] else records[1]["tries"][records[1]["kept"]]["lr"]
    if previous < max(grid) and check_updates(steps[1]["epochs"] * steps[1]["batches"]):  # checked against 3x
        check = records[2]["lr_search"]
        assert [t["lr"] for t in check["trials"]] == [previous, pytest.approx(3 * previous)]
        assert records[2]["lr"] == check["chosen"]
    else:
        assert "lr_search" not in records[2]
    progress = load_checkpoint(tmp_path).progress
    assert progress.lr in [t["lr"] for r in records[1:3] for t in r.get("tries", [r])]
    assert progress.optimizer == search["optimizer"] == records[2]["optimizer"]  # the searched optimizer carries on
    assert records[0]["val_samples"] == len(val) and "one_shot_val_accuracy" in records[0]


def test_a_diverging_rate_is_rolled_back_and_retried_lower(digits, tmp_path):
    model, train, val = digits
    retries, after_first_step = [], []

    def watch(kind, info):
        if kind == "retry":
            retries.append(info)
        if kind == "step" and info["step"] == 1:  # step 1's checkpoint is written
            after_first_step.append(load_checkpoint(tmp_path).model)

    result = retrain(model, train, inq=INQ, options=TrainOptions(epochs_per_step=1, batch_size=64, lr=1e3),
                     run_dir=tmp_path, val=val, on_event=watch)
    first = read_log(tmp_path)[1]
    lrs = [t["lr"] for t in first["tries"]]
    assert len(lrs) == MAX_RETRIES + 1 and lrs[1] == pytest.approx(lrs[0] / RETRY_DIVISOR)
    assert first["kept"] is None  # every try diverged: the step keeps its start
    assert sum(r["step"] == 0 for r in retries) == MAX_RETRIES
    stepped, _ = partition_step(model, start(model, INQ))
    for a, b in zip(stepped.graph.initializer, after_first_step[0].graph.initializer):  # exactly the start
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
    assert off_codebook(result.model) == []
    assert load_checkpoint(tmp_path).progress.lr <= min(lrs) * 1.000001  # later steps start lower


def test_without_val_a_slice_of_the_data_is_held_out_and_not_trained_on(digits, tmp_path):
    model, train, _ = digits
    steps = []
    retrain(model, train, inq=INQ, options=TrainOptions(epochs_per_step=1, batch_size=64, lr=0.01), run_dir=tmp_path,
            on_event=lambda kind, info: steps.append(info) if kind == "step" else None)
    held = round(0.1 * len(train))
    assert steps[0]["batches"] == (len(train) - held) // 64
    first = read_log(tmp_path)[0]
    assert first["val_samples"] == held and "held out" in first["val_source"]


def test_fidelity_uses_every_sample(digits):
    model, train, val = digits
    both = Samples({"input": np.concatenate([train.inputs["input"], val.inputs["input"]])},
                   np.concatenate([train.labels, val.labels]), "both", train.sample_axes)
    assert len(both) > 512
    assert fidelity(model, model, both).samples == len(both)


def test_ending_below_one_shot_is_said_plainly():
    records = [{"step": -1, "val_accuracy": 0.98, "one_shot_val_accuracy": 0.95, "val_samples": 1000},
               {"step": 0, "lr": 0.01, "val_accuracy": 0.93}, {"step": 1, "val_accuracy": 0.94}]
    message = below_one_shot(records)
    assert "BELOW one-shot" in message and "0.9400 against 0.9500" in message and "--lr" in message
    records[-1]["val_accuracy"] = 0.96
    assert below_one_shot(records) is None
    records[-1]["val_accuracy"] = 0.948  # 2 samples in 1000 below: noise, not a verdict
    assert below_one_shot(records) is None
    assert below_one_shot([{"step": -1, "one_shot_sqnr_db": 20.0}, {"step": 0, "sqnr_db": 12.0}]).count("dB") == 2


def test_a_run_interrupted_in_a_retry_resumes_to_identical_weights(digits, tmp_path):
    import os
    import signal

    from inq_onnx.train.loop import Interrupted

    model, train, val = digits
    options = TrainOptions(epochs_per_step=1, batch_size=64, lr=1e3, checkpoint_minutes=0)
    straight = retrain(model, train, inq=INQ, options=options, run_dir=tmp_path / "a", val=val)
    state = {"retried": False, "sent": False}

    def interrupt_in_the_retry(kind, info):
        state["retried"] |= kind == "retry"
        if kind == "batch" and state["retried"] and not state["sent"] and info["batch"] == 3:
            state["sent"] = True
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        retrain(model, train, inq=INQ, options=options, run_dir=tmp_path / "b", val=val,
                on_event=interrupt_in_the_retry)
    ckpt = load_checkpoint(tmp_path / "b")
    assert ckpt.progress.guard["tries"] and "start" in ckpt.arrays  # the guard's state is in the checkpoint
    resumed = retrain(model, train, inq=INQ, options=options, run_dir=tmp_path / "b", val=val)
    for key, value in weights(straight.model).items():
        np.testing.assert_array_equal(weights(resumed.model)[key], value)
    assert read_log(tmp_path / "b")[1]["tries"] == read_log(tmp_path / "a")[1]["tries"]


def test_val_judges_only_when_it_can_feed_the_training_graph(digits):
    from inq_onnx.train.branch_samples import held_out

    _, train, val = digits
    options = TrainOptions(batch_size=64)
    assert held_out(train, val, options, 0) == (train, val)
    unlabelled = Samples(val.inputs, None, "val.npz", val.sample_axes)
    kept, judge = held_out(train, unlabelled, options, 0)  # cross-entropy needs labels: a slice of --data
    assert len(kept) + len(judge) == len(train) and "held out" in judge.source
    assert held_out(train, unlabelled, TrainOptions(batch_size=64, loss="distill"), 0)[1] is unlabelled
    wider = Samples({"input": np.zeros((10, 1, 8, 9), np.float32)}, np.zeros(10, np.int64), "w.npz", val.sample_axes)
    assert "held out" in held_out(train, wider, options, 0)[1].source  # other shapes than the training graph's
