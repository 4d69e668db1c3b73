"""Full INQ on the fixture: every weight ends in its codebook, frozen weights never move after
their step, accuracy holds, and an interrupted run resumes to exactly the same weights."""

import os
import signal

import numpy as np
import onnx
import pytest

from inq_onnx.data import load_samples
from inq_onnx.graph.tensors import read_tensor
from inq_onnx.incremental import InqOptions, check_sidecar, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantized_tensors
from inq_onnx.train.checkpoint import load_checkpoint
from inq_onnx.train.loop import Interrupted, retrain
from inq_onnx.train.run_log import read_log
from inq_onnx.train.options import TrainOptions
from inq_onnx.verify import off_codebook
from tests.conftest import FIXTURE


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    d = np.load(FIXTURE.parent / "digits.npz")
    for split, key in (("train", "train"), ("val", "test")):
        np.savez(folder / f"{split}.npz", input=d[f"x_{key}"].astype(np.float32) / 16, labels=d[f"y_{key}"])
    model = onnx.load(str(FIXTURE))
    return model, load_samples(folder / "train.npz", model), load_samples(folder / "val.npz", model)


INQ = InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 0.8, 1.0))
TRAIN = TrainOptions(epochs_per_step=1, batch_size=64)


def weights(model):
    return {k: read_tensor(model, s).copy() for k, s in weight_sites(model, INQ.quantize).items()}


def test_full_run_quantizes_everything_and_keeps_accuracy(digits, tmp_path):
    model, train, val = digits
    frozen_at = {}

    def check_frozen(kind, info):
        if kind == "record" and info["step"] >= 0:
            ckpt = load_checkpoint(tmp_path)
            current = weights(ckpt.model) if ckpt else None
            for key, (mask, values) in frozen_at.items():
                assert np.array_equal(current[key][mask], values[mask]), f"{key} moved after being frozen"
            if ckpt:
                frozen_at.update({k: (s.mask.copy(), current[k]) for k, s in ckpt.sidecar.tensors.items()})

    result = retrain(model, train, inq=INQ, options=TRAIN, run_dir=tmp_path, val=val, on_event=check_frozen)
    assert off_codebook(result.model) == [] and quantized_tensors(result.model)[0] == 4
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [-1, 0, 1, 2]
    assert records[-1]["val_accuracy"] > records[0]["float_accuracy"] - 0.03
    assert len(frozen_at) == 4
    choice = records[0]["range_choice"]  # --range auto judged the n1 rules on the training samples
    assert choice["samples"] == 64 and choice["runs"] >= 1 and choice["error"] is None


def test_interrupted_run_resumes_to_identical_weights(digits, tmp_path):
    model, train, val = digits
    straight = retrain(model, train, inq=INQ, options=TRAIN, run_dir=tmp_path / "a")
    seen = []

    def interrupt_once(kind, info):
        if kind == "batch":
            seen.append(info)
            if len(seen) == 30:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        retrain(model, train, inq=INQ, options=TRAIN, run_dir=tmp_path / "b", on_event=interrupt_once)
    ckpt = load_checkpoint(tmp_path / "b")
    assert not ckpt.progress.trained and ckpt.optimizer is not None
    events = []
    resumed = retrain(model, train, inq=INQ, options=TRAIN, run_dir=tmp_path / "b", on_event=lambda k, i: events.append(k))
    assert resumed.resumed and "resumed" in events
    for key, value in weights(straight.model).items():
        np.testing.assert_array_equal(weights(resumed.model)[key], value)


def test_resume_with_other_options_is_refused(digits, tmp_path):
    model, train, _ = digits
    retrain(model, train, inq=INQ, options=TrainOptions(epochs_per_step=0), run_dir=tmp_path)
    from inq_onnx.errors import SidecarError
    with pytest.raises(SidecarError, match="other options"):
        retrain(model, train, inq=INQ, options=TrainOptions(epochs_per_step=0, lr=0.5), run_dir=tmp_path)


def test_a_log_line_torn_by_a_kill_spoils_only_itself(tmp_path):
    import json

    from inq_onnx.train.run_log import LOG, append_line

    append_line(tmp_path / LOG, json.dumps({"step": 0, "train_loss": 0.5}))
    with open(tmp_path / LOG, "a") as f:
        f.write('{"step": 1, "train_lo')  # killed while writing step 1's record
    append_line(tmp_path / LOG, json.dumps({"step": 1, "train_loss": 0.25}))  # the rerun's
    assert read_log(tmp_path) == [{"step": 0, "train_loss": 0.5}, {"step": 1, "train_loss": 0.25}]


def test_bias_correction_after_each_step_moves_the_biases_and_keeps_the_masks(digits, tmp_path):
    model, train, val = digits
    on = InqOptions(QuantizeOptions(bits=4, bias_correction="on", rounding="nearest"), schedule=(0.5, 1.0))
    off = InqOptions(QuantizeOptions(bits=4, bias_correction="off", rounding="nearest"), schedule=(0.5, 1.0))
    no_training = TrainOptions(epochs_per_step=0, batch_size=64)  # only the partition steps (and corrections)
    first_step = {}  # the models after step 1 (the run's end may keep the one-shot model instead)

    def run(inq, name):
        def watch(kind, info):
            if kind == "step" and info["step"] == 1:
                first_step[name] = load_checkpoint(tmp_path / name).model
        retrain(model, train, inq=inq, options=no_training, run_dir=tmp_path / name, on_event=watch)
        return first_step[name]

    a, b = run(on, "on"), run(off, "off")
    assert off_codebook(a) == [] and weights(a).keys() == weights(b).keys()
    for key, value in weights(a).items():
        np.testing.assert_array_equal(value, weights(b)[key])  # the weights are the same; only biases moved
    biases = lambda m: {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("bias")}
    moved = [k for k, v in biases(a).items() if not np.array_equal(v, biases(b)[k])]
    assert moved and len(a.graph.initializer) == len(b.graph.initializer)


def test_error_feedback_rounds_each_step_closer_to_the_float_model(digits, tmp_path):
    model, train, val = digits
    logs = {}
    for rounding in ("feedback", "nearest"):
        inq = InqOptions(QuantizeOptions(bits=3, rounding=rounding), schedule=(0.5, 1.0))
        result = retrain(model, train, inq=inq, options=TrainOptions(epochs_per_step=0, batch_size=64),
                         run_dir=tmp_path / rounding, val=val)
        assert off_codebook(result.model) == []
        logs[rounding] = read_log(tmp_path / rounding)
    fed, near = logs["feedback"], logs["nearest"]
    assert fed[1]["feedback"]["weights"] == 4 and fed[1]["feedback"]["nearest"] == 0 and "feedback" not in near[1]
    assert fed[1]["sqnr_db"] > near[1]["sqnr_db"] + 1.0 and fed[-1]["sqnr_db"] > near[-1]["sqnr_db"] + 1.0


def test_a_finished_run_is_checked_against_one_shot_rounding_with_the_same_data(digits, tmp_path):
    model, train, val = digits
    kept = {}
    for name, rounding, bias in (("tie", "nearest", "off"), ("corrected", "nearest", "auto"),
                                 ("feedback", "feedback", "auto")):
        inq = InqOptions(QuantizeOptions(bits=2, rounding=rounding, bias_correction=bias), schedule=(0.5, 1.0))
        result = retrain(model, train, inq=inq, options=TrainOptions(epochs_per_step=0, batch_size=64),
                         run_dir=tmp_path / name, val=val)
        check = read_log(tmp_path / name)[-1]["one_shot_check"]
        losses, kept[name] = check["held_out_loss"], check["kept"]
        assert kept[name] == ("one_shot" if losses["one_shot"] < losses["inq"] else "inq")
        final = load_checkpoint(tmp_path / name)
        assert final.model.SerializeToString() == result.model.SerializeToString()
        check_sidecar(result.model, final.sidecar, inq)  # the one-shot model fits the run's sidecar
    # Without training or bias correction, rounding to nearest step by step is one-shot rounding:
    # a tie keeps the run. One-shot corrects the biases (auto: judged), steps do not: it wins.
    assert kept["tie"] == "inq" and kept["corrected"] == "one_shot"
