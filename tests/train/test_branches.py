"""Every branch of an If retrains in one run (``--pin sel=1,2``), each with its own data, against
a named float teacher; weights of the other branches are untouched while one trains, and a
killed run resumes to the same weights. The model is a tiny inline If, like silero's sr switch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inq_onnx.data import Samples, branch_label, load_branch_samples, pin_combinations, pinned_values
from inq_onnx.errors import DataError, InvalidOptionError, SidecarError
from inq_onnx.graph.tensors import read_tensor
from inq_onnx.incremental import InqOptions, start, weight_sites
from inq_onnx.options import QuantizeOptions
from inq_onnx.quantize import quantize_model
from inq_onnx.train.checkpoint import load_checkpoint
from inq_onnx.train.loop import Interrupted, retrain
from inq_onnx.train.run_log import read_log
from inq_onnx.train.options import TrainOptions
from inq_onnx.train.setup import build_setup
from inq_onnx.train.teacher import check_teacher
from inq_onnx.verify import off_codebook
from tests.train.train_helpers import run

F = TensorProto.FLOAT
WIDTH = {1: 4, 2: 6}  # samples per call in each branch, as silero's 16 kHz and 8 kHz branches differ


def branch(value: int, rng) -> onnx.GraphProto:
    """y = MatMul(Tanh(MatMul(x, W_a)), W_b), its weights Constant nodes inside the branch."""
    w_a = rng.normal(0, 0.5, (WIDTH[value], 8)).astype(np.float32)
    w_b = rng.normal(0, 0.5, (8, 3)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], [f"w{value}a"], value=onnx.numpy_helper.from_array(w_a)),
             helper.make_node("Constant", [], [f"w{value}b"], value=onnx.numpy_helper.from_array(w_b)),
             helper.make_node("MatMul", ["x", f"w{value}a"], [f"h{value}"]),
             helper.make_node("Tanh", [f"h{value}"], [f"t{value}"]),
             helper.make_node("MatMul", [f"t{value}", f"w{value}b"], [f"y{value}"])]
    return helper.make_graph(nodes, f"branch{value}", [], [helper.make_tensor_value_info(f"y{value}", F, ["N", 3])])


def if_model(seed: int = 0) -> onnx.ModelProto:
    """y = branch1(x) if sel == 1 else branch2(x); x is [N, 4] for sel 1 and [N, 6] for sel 2."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Constant", [], ["one"], value=onnx.numpy_helper.from_array(np.array(1, np.int64))),
             helper.make_node("Equal", ["sel", "one"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch(1, rng), else_branch=branch(2, rng))]
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", F, ["N", "W"]),
                                                  helper.make_tensor_value_info("sel", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", F, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def samples(value: int, n: int = 64, seed: int = 1) -> Samples:
    x = np.random.default_rng([seed, value]).uniform(-1, 1, (n, WIDTH[value])).astype(np.float32)
    return Samples({"x": x}, None, f"branch{value}.npz", {"x": 0})


INQ = InqOptions(QuantizeOptions(bits=4), schedule=(0.5, 0.8, 1.0))
BOTH = TrainOptions(epochs_per_step=2, batch_size=16, lr=0.05, pins={"sel": [1, 2]})


def branch_weights(model: onnx.ModelProto, value: int) -> dict[str, np.ndarray]:
    """The weights of one branch, by their sidecar keys."""
    sites = weight_sites(model, INQ.quantize)
    return {k: read_tensor(model, s).copy() for k, s in sites.items() if f"w{value}" in k}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both branches in one run, and each branch alone, uninterrupted."""
    model, folder = if_model(), tmp_path_factory.mktemp("branches")
    both = retrain(model, [samples(1), samples(2)], inq=INQ, options=BOTH, run_dir=folder / "both",
                   val=[samples(1, seed=9), samples(2, seed=9)])
    alone = {v: retrain(model, samples(v), inq=INQ, options=TrainOptions(**{**BOTH.__dict__, "pins": {"sel": v}}),
                        run_dir=folder / f"alone{v}", val=samples(v, seed=9)) for v in (1, 2)}
    return model, both, alone, folder


def test_pins_give_one_branch_per_combination():
    assert pin_combinations({"sel": [1, 2]}) == [{"sel": 1}, {"sel": 2}]
    assert pin_combinations({"a": [1, 2], "b": 3}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert pin_combinations({"sr": 16000}) == [{"sr": 16000}] and pin_combinations({}) == [{}]
    assert branch_label(pinned_values(if_model(), {"sel": 2})) == "sel=2"


def test_every_branch_retrains_and_each_as_if_alone(runs):
    model, both, alone, _ = runs
    assert off_codebook(both.model) == []
    for value in (1, 2):
        trained, other = branch_weights(both.model, value), branch_weights(alone[3 - value].model, value)
        for key, array in branch_weights(alone[value].model, value).items():
            # a branch's training never touches the other's weights, so each ends as when trained alone ...
            np.testing.assert_array_equal(trained[key], array)
            # ... and unlike a run that pinned only the other branch (where it keeps one-shot values)
            assert not np.array_equal(other[key], array), key


def test_the_log_has_each_branchs_loss_and_validation(runs):
    _, both, _, folder = runs
    records = read_log(folder / "both")
    assert [r["step"] for r in records] == [-1, 0, 1, 2]
    step = records[1]
    assert set(step["branches"]) == {"sel=1", "sel=2"} and set(step["branch_train_loss"]) == {"sel=1", "sel=2"}
    assert all(loss > 0 for loss in step["branch_train_loss"].values())
    mean = np.mean([step["branches"][k]["sqnr_db"] for k in ("sel=1", "sel=2")])
    assert step["sqnr_db"] == pytest.approx(mean, abs=1e-3)


def test_a_run_killed_in_the_second_branch_resumes_to_identical_weights(runs, tmp_path):
    model, both, _, _ = runs
    seen = []

    def interrupt(kind, info):
        if kind == "batch":
            seen.append(info)
            if len(seen) == 8 + 3:  # 8 batches per branch and step: the 4th batch of branch sel=2, step 1
                os.kill(os.getpid(), signal.SIGINT)

    train, val = [samples(1), samples(2)], [samples(1, seed=9), samples(2, seed=9)]
    with pytest.raises(Interrupted, match="in step 1, branch sel=2, epoch 1, batch 4"):
        retrain(model, train, inq=INQ, options=BOTH, run_dir=tmp_path, val=val, on_event=interrupt)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.progress.branch == 1 and ckpt.progress.batch == 3 and len(ckpt.progress.branch_losses) == 1
    events = []
    resumed = retrain(model, train, inq=INQ, options=BOTH, run_dir=tmp_path, val=val,
                      on_event=lambda kind, info: events.append((kind, info)))
    assert ("resumed", {"step": 0, "epoch": 0, "batch": 3, "trained": False, "branch": "sel=2"}) in events
    for key, node in weight_sites(both.model, INQ.quantize).items():
        np.testing.assert_array_equal(read_tensor(resumed.model, node), read_tensor(both.model, node))
    assert read_log(tmp_path)[1]["train_loss"] == pytest.approx(read_log(runs[3] / "both")[1]["train_loss"])


def test_data_per_branch_must_pair_with_the_pins(tmp_path):
    model = if_model()
    for v in (1, 2):
        np.savez(tmp_path / f"d{v}.npz", x=samples(v).inputs["x"])
    combos = [pinned_values(model, c) for c in pin_combinations({"sel": [1, 2]})]
    paths = [tmp_path / "d1.npz", tmp_path / "d2.npz"]
    assert [len(s.inputs["x"][0]) for s in load_branch_samples(paths, model, combos)] == [4, 6]
    with pytest.raises(DataError, match=r"3 --data files for 2 pinned branches \(sel=1, sel=2\)"):
        load_branch_samples(paths + paths[:1], model, combos)
    with pytest.raises(DataError, match="3 val sample sets for 2 pinned branches"):
        retrain(model, [samples(1), samples(2)], inq=INQ, options=BOTH, run_dir=tmp_path / "r", val=[samples(1)] * 3)
    with pytest.raises(DataError, match="branch1.npz does not run through the model with sel=2"):
        retrain(model, samples(1), inq=INQ, options=BOTH, run_dir=tmp_path / "r")  # 4 values for branch 2's 6
    assert not (tmp_path / "r").exists()  # refused before anything is built


def test_the_teacher_must_match_the_model():
    model, other = if_model(), if_model()
    other.graph.output[0].name = "z"
    with pytest.raises(InvalidOptionError, match=r"the teacher's outputs differ from the model's \(y vs z\).*--teacher"):
        check_teacher(model, other)
    other = if_model()
    other.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(InvalidOptionError, match="the teacher's inputs differ"):
        check_teacher(model, other)
    check_teacher(model, if_model(seed=5))  # other weights, same signature


def one_shot(model: onnx.ModelProto) -> onnx.ModelProto:
    return quantize_model(model, QuantizeOptions(bits=4)).model


def test_distillation_targets_come_from_the_teacher(tmp_path):
    model = if_model()
    quantized = one_shot(model)
    sidecar = start(quantized, INQ)
    options = TrainOptions(batch_size=16, pins={"sel": 1})
    feeds = {"x": samples(1).inputs["x"][:16], "sel": np.array(1, np.int64)}
    for teacher, expected in ((model, model), (None, quantized)):
        setup = build_setup(quantized, samples(1), sidecar, options, tmp_path / str(teacher is None), teacher=teacher)
        extra = setup.feeder.extra(np.arange(16), {"x": feeds["x"]})
        np.testing.assert_array_equal(extra[setup.feeder.loss.extra_input], run(expected, feeds)[0])


def test_a_quantized_input_says_which_teacher_is_used_and_a_resume_keeps_it(tmp_path):
    model = if_model()
    quantized = one_shot(model)
    options = TrainOptions(epochs_per_step=0, pins={"sel": 1})
    events = []
    retrain(quantized, samples(1), inq=INQ, options=options, run_dir=tmp_path / "a",
            on_event=lambda kind, info: events.append((kind, info)))
    assert ("teacher", {"given": False, "model_quantized": True, "teacher_quantized": True}) in events
    events.clear()
    retrain(quantized, samples(1), inq=INQ, options=options, run_dir=tmp_path / "b", teacher=model,
            on_event=lambda kind, info: events.append((kind, info)))
    assert ("teacher", {"given": True, "model_quantized": True, "teacher_quantized": False}) in events
    with pytest.raises(SidecarError, match=r"other options \(teacher\)"):
        retrain(quantized, samples(1), inq=INQ, options=options, run_dir=tmp_path / "b", teacher=if_model(seed=3))


CLI = [sys.executable, "-m", "inq_onnx_cli.main", "quantize"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_retrains_both_branches_with_data_per_pin_and_refuses_a_mismatch(tmp_path):
    onnx.save(if_model(), tmp_path / "m.onnx")
    for v in (1, 2):
        np.savez(tmp_path / f"d{v}.npz", x=samples(v).inputs["x"])
    common = ["--bits", "4", "--schedule", "0.5,1", "--epochs-per-step", "1", "--batch-size", "16"]
    bad = cli(tmp_path / "m.onnx", *common, "--pin", "sel=1", "--pin", "sel=2", "--data", tmp_path / "d1.npz",
              "--data", tmp_path / "d2.npz", "--data", tmp_path / "d1.npz", "-o", tmp_path / "out.onnx")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: 3 --data files for 2 pinned branches (sel=1, sel=2). To fix this, give one --data per pinned value, "
        "in the same order, or one --data for all"]
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.onnx.inq-run").exists()
    done = cli(tmp_path / "m.onnx", *common, "--pin", "sel=1,2", "--data", tmp_path / "d1.npz", "--data",
               tmp_path / "d2.npz", "--val", tmp_path / "d1.npz", "--val", tmp_path / "d2.npz", "-o", tmp_path / "out.onnx")
    assert done.returncode == 0, done.stderr
    assert "[sel=1: agreement" in done.stderr and "[sel=2: agreement" in done.stderr
    again = cli(tmp_path / "out.onnx", *common, "--pin", "sel=1,2", "--data", tmp_path / "d1.npz", "--data",
                tmp_path / "d2.npz", "-o", tmp_path / "out2.onnx")
    assert again.returncode == 0 and "pass --teacher FLOAT_MODEL" in again.stderr, again.stderr


def test_cli_one_shot_refuses_options_that_need_retraining(tmp_path):
    onnx.save(if_model(), tmp_path / "m.onnx")
    done = cli(tmp_path / "m.onnx", "--pin", "sel=1,2", "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and done.stderr.startswith("error: several --pin values: only used when retraining")
    done = cli(tmp_path / "m.onnx", "--teacher", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and done.stderr.startswith("error: --teacher: only used when retraining")


@pytest.mark.slow
def test_silero_vad_retrains_both_rates_in_one_run(tmp_path):
    """Both branches of silero_vad (16 kHz: 576 samples per call, 8 kHz: 288), tiny budget."""
    from inq_onnx.jobs import inq_file
    from tests.conftest import shared_model
    from tests.train import speech

    path = shared_model("silero_vad.onnx")
    if not speech.SPEECH.exists():
        pytest.skip(f"{speech.SPEECH} is absent")
    data = [speech.save_samples(tmp_path / f"d{rate}.npz", rate, np.arange(0, 1500, 47)) for rate in (16000, 8000)]
    inq = InqOptions(QuantizeOptions(bits=4, per_channel=True), schedule=(0.5, 1.0))
    options = TrainOptions(epochs_per_step=1, batch_size=16, pins={"sr": [16000, 8000]})
    job = inq_file(path, tmp_path / "out.onnx", inq, options, data=data, val=data)
    trained = onnx.load(str(job.output))
    one_shot = quantize_model(onnx.load(str(path)), inq.quantize).model
    assert off_codebook(trained) == []
    sites = weight_sites(trained, inq.quantize)
    for part in ("then_branch", "else_branch"):  # 16 kHz, 8 kHz
        keys = [k for k in sites if part in k]
        assert keys and any(not np.array_equal(read_tensor(trained, sites[k]), read_tensor(one_shot, sites[k]))
                            for k in keys), f"the {part} weights kept their one-shot values"
    assert set(job.records[1]["branches"]) == {"sr=16000", "sr=8000"}


@pytest.mark.skipif(sys.platform != "linux", reason="stops processes with SIGSTOP, finds them in /proc")
def test_a_run_killed_between_branches_resumes_to_identical_weights(tmp_path):
    """SIGKILL right after the first branch's checkpoint (at the second branch's start): the
    rerun goes on with the second branch and ends with the uninterrupted run's bytes."""
    from tests.train.test_killed_runs import kill, start_paused

    onnx.save(if_model(), tmp_path / "m.onnx")
    for v in (1, 2):
        np.savez(tmp_path / f"d{v}.npz", x=samples(v).inputs["x"])
    args = [*CLI, tmp_path / "m.onnx", "--bits", "4", "--schedule", "0.5,0.8,1", "--epochs-per-step", "2",
            "--batch-size", "16", "--pin", "sel=1,2", "--data", tmp_path / "d1.npz", "--data", tmp_path / "d2.npz"]
    straight = subprocess.run([*map(str, args), "-o", str(tmp_path / "a.onnx")], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    killed = [*map(str, args), "-o", str(tmp_path / "b.onnx")]
    kill(start_paused(killed, "step:4"))  # step 2, branch sel=2 starts: sel=1's checkpoint is written
    ckpt = load_checkpoint(tmp_path / "b.onnx.inq-run")
    assert ckpt.sidecar.step == 1 and ckpt.progress.branch == 1 and ckpt.optimizer is None
    done = subprocess.run(killed, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming the run from its checkpoint in step 2, branch sel=2, epoch 1, batch 1" \
        in done.stderr, done.stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert (tmp_path / "a.inq.safetensors").read_bytes() == (tmp_path / "b.inq.safetensors").read_bytes()
