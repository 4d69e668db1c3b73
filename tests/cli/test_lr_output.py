"""What a user sees of the learning-rate search, the held-out slice and the step guard."""

import re

import numpy as np

from tests.cli.test_cli import run
from tests.conftest import FIXTURE


def test_a_default_run_says_how_the_rate_was_chosen_and_what_the_figures_are_on(tmp_path):
    digits = np.load(FIXTURE.parent / "digits.npz")
    train = tmp_path / "train.npz"
    np.savez(train, input=digits["x_train"].astype(np.float32) / 16.0, labels=digits["y_train"])
    out = tmp_path / "q.onnx"
    proc = run("quantize", FIXTURE, "--bits", "4", "--schedule", "0.5,1", "--epochs-per-step", "1", "--data", train,
               "-o", out)
    assert proc.returncode == 0, proc.stderr
    trials = re.search(r"learning rate \S+, chosen from (\d+) trials", proc.stderr)
    assert trials and 10 <= int(trials[1]) <= 14  # both optimizers' grids, and at most two past each one's ends
    assert "one-shot: val accuracy" in proc.stderr
    assert "validation figures on 144 samples (144 samples held out of" in proc.stdout
    assert "ONNX Runtime ran it on the first samples" in proc.stdout
    report = run("report", f"{out}.inq-run")
    assert report.returncode == 0, report.stderr
    assert " lr " in report.stdout.splitlines()[0] and f"chosen from {trials[1]} trials" in report.stdout
    assert "n1 rules judged by the outputs on 64 samples" in report.stdout  # --range auto with --data


def test_a_rolled_back_step_is_shown(tmp_path):
    from inq_onnx_cli.progress import describe_retry
    from inq_onnx_cli.render import lr_cell, run_notes

    assert "rose from 0.2 to 0.9 with lr 0.03: rolled back, retrying with lr 0.01" in describe_retry(
        {"step": 0, "lr": 0.03, "loss": 0.9, "start_loss": 0.2, "outcome": "done", "next_lr": 0.01})
    assert "NaN or infinite" in describe_retry({"step": 0, "lr": 0.03, "loss": None, "start_loss": 0.2,
                                                "outcome": "diverged", "next_lr": 0.01})
    record = {"step": 0, "lr": 0.03, "tries": [{"lr": 0.03, "loss": None}, {"lr": 0.01, "loss": 0.1}], "kept": 1}
    assert lr_cell(record) == "0.03 -> 0.01 (2 tries)"
    assert lr_cell({**record, "kept": None}) == "0.03 -> start (2 tries)"
    notes = run_notes([{"step": -1, "one_shot_val_accuracy": 0.9, "val_samples": 100, "val_source": "val.npz"},
                       {**record, "val_accuracy": 0.8}])
    assert notes[0] == "validation figures on 100 samples (val.npz)" and "BELOW one-shot" in notes[-1]
    choice = {"samples": 64, "runs": 9, "error_static": 4.8, "error_chosen": 0.37, "changed": {"w": "mae"},
              "error": None, "kept_static": False}
    notes = run_notes([{"step": -1, "range_choice": choice}, {**record, "val_accuracy": 0.8}])
    assert notes[0] == "n1 rules judged by the outputs on 64 samples (9 trial runs): 1 to mae; output error 4.8 -> 0.37"


def test_a_run_off_between_optimizers_is_shown():
    from inq_onnx_cli.progress import describe_search

    search = {"kind": "search", "chosen": 0.003, "optimizer": "sgd", "updates": 20, "seconds": 9.0,
              "judged_on": "32 samples held out of train.npz",
              "trials": [{"optimizer": "sgd", "lr": 0.003, "loss": 0.27}, {"optimizer": "adamw", "lr": 0.001, "loss": 0.25}],
              "runoff": [{"optimizer": "sgd", "lr": 0.003, "loss": 0.068}, {"optimizer": "adamw", "lr": 0.001, "loss": 0.157}],
              "runoff_updates": 62}
    text = describe_search(search)
    assert text.startswith("sgd learning rate 0.003, chosen from 2 trials")
    assert "sgd 0.003: 0.27, adamw 0.001: 0.25" in text
    assert "then a run-off of 62 updates each: sgd 0.003: 0.068, adamw 0.001: 0.157" in text


def test_error_feedback_and_the_one_shot_check_are_shown():
    from inq_onnx_cli.render import run_notes

    steps = [{"step": 0, "lr": 0.01, "feedback": {"weights": 5, "nearest": 0, "samples": 64, "seconds": 1.5}},
             {"step": 1, "feedback": {"weights": 5, "nearest": 0, "samples": 64, "seconds": 1.0},
              "one_shot_check": {"held_out_loss": {"inq": 0.2, "one_shot": 0.1}, "kept": "one_shot", "seconds": 1.0}}]
    notes = run_notes(steps)
    assert "error feedback rounding at 2 steps: up to 5 weights on 64 samples, 2.5 s in all" in notes
    assert ("checked against one-shot rounding with the same data: held-out loss 0.2 retrained, 0.1 one-shot; "
            "kept the one-shot model (error feedback, same data)") in notes
    steps[1]["one_shot_check"] = {"skipped": "the teacher is another graph than the model (--teacher)"}
    assert "not checked against one-shot rounding: the teacher is another graph than the model (--teacher)" in run_notes(steps)
