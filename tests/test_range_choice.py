"""n1 rules judged by the model's outputs: an outlier on a dead input is clamped, one on a live
input is kept, and a model that cannot run keeps the static rules, saying why."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inq_onnx.codebook_range import RangeRule, make_codebook_by
from inq_onnx.data import Samples
from inq_onnx.graph.tensors import TensorSite
from inq_onnx.incremental import InqOptions, choose_ranges, start
from inq_onnx.options import QuantizeOptions
from inq_onnx.calibration import calibrate
from inq_onnx.graph.tensors import write_tensor
from inq_onnx.quantize import correct_biases, quantize_model
from inq_onnx.range_choice import choose_rules, output_error, output_judge
from inq_onnx.report import range_choice_summary
from inq_onnx.train.resume import first_checkpoint
from tests.conftest import conv_gemm_model, make_model, tensor

F = TensorProto.FLOAT
W = TensorSite("w", (), "initializer")


def outlier_model(outlier: float = 60.0) -> tuple:
    """y = x @ w, w [32, 16] ~ N(0, 1) with one outlier in row 0."""
    w = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    w[0, 0] = outlier
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 32])],
                      [helper.make_tensor_value_info("y", F, ["N", 16])], [tensor("w", w)])


def samples(live_first_input: bool, n: int = 48) -> Samples:
    x = np.random.default_rng(1).normal(size=(n, 32)).astype(np.float32)
    x[:, 0] = 20.0 * x[:, 0] if live_first_input else 0.0
    return Samples({"x": x}, None, "test")


def test_output_error_is_the_mean_square_difference_over_each_outputs_mean_square():
    y = [np.array([[1.0, -1.0]]), np.array([2.0, 2.0])]
    assert output_error(y, y) == 0.0
    assert output_error(y, [np.array([[0.0, -1.0]]), np.array([2.0, 0.0])]) == pytest.approx(0.5 + 0.5)
    assert output_error([np.zeros(2)], [np.ones(2)]) == 1.0  # an all-zero output: not divided by zero
    assert output_error(y, [np.array([[np.nan, 0.0]]), y[1]]) == float("inf")


def test_an_outlier_on_an_input_that_is_always_zero_is_clamped():
    model = outlier_model()
    choice = choose_rules(model, {W: ()}, 4, output_judge(model, [(samples(live_first_input=False), {})]))
    assert choice.error is None and choice.samples == 48
    assert choice.rules[W] in (RangeRule.MSE, RangeRule.MAE)  # the paper's n1 follows the outlier and zeroes the rest
    assert choice.changed == {"w": choice.rules[W].value}
    assert choice.error_chosen < 0.1 * choice.error_static


def test_an_outlier_that_carries_the_output_keeps_the_papers_range():
    model = outlier_model(outlier=14.0)
    choice = choose_rules(model, {W: ()}, 4, output_judge(model, [(samples(live_first_input=True), {})]))
    assert choice.rules[W] is RangeRule.PAPER and choice.changed == {}
    assert choice.error_chosen == choice.error_static


def test_one_shot_with_samples_records_the_chosen_rule_and_is_deterministic():
    model, s = outlier_model(), samples(live_first_input=False)
    options = QuantizeOptions(bits=4, bias_correction="off")
    first, second = (quantize_model(model, options, samples=s) for _ in range(2))
    rule = first.range_choice.rules[W].value
    assert rule != "paper" and first.tensors[0].range_rule == rule
    assert first.model.SerializeToString() == second.model.SerializeToString()
    assert quantize_model(model, options).range_choice is None  # no samples: the static rule
    fixed = quantize_model(model, QuantizeOptions(bits=4, range="paper", bias_correction="off"), samples=s)
    assert fixed.range_choice is None and fixed.tensors[0].range_rule == "paper"  # an explicit rule is kept
    assert "1 to " in range_choice_summary(first.range_choice)


def test_a_model_that_cannot_run_on_the_samples_keeps_the_static_rules_and_says_why():
    wrong = Samples({"x": np.zeros((4, 5), np.float32)}, None, "test")  # 5 features, the model takes 32
    model = outlier_model()
    choice = choose_rules(model, {W: ()}, 4, output_judge(model, [(wrong, {})]))
    assert choice.rules == {W: RangeRule.PAPER} and choice.runs == 0
    assert choice.error.startswith("the model could not be run on the samples")
    assert "static auto rules stand" in range_choice_summary(choice)


def test_full_inq_starts_from_the_chosen_rules_and_says_so():
    model, s = outlier_model(), samples(live_first_input=False)
    inq = InqOptions(quantize=QuantizeOptions(bits=4))
    events = []
    ckpt, logged = first_checkpoint(model, inq, [(s, {})], {"bits": 4}, lambda kind, info: events.append((kind, info)))
    assert logged["changed"] == {"w": ckpt.sidecar.tensors["w"].range_rule.value} and not logged["kept_static"]
    chosen = choose_ranges(model, inq, [(s, {})]).rules[W]
    assert ckpt.sidecar.tensors["w"].range_rule is chosen is not RangeRule.PAPER
    assert start(model, inq).tensors["w"].range_rule is RangeRule.PAPER  # without samples: static
    assert [k for k, _ in events] == ["range_choice"] and events[0][1]["summary"].startswith("n1 rules judged")
    paper = InqOptions(quantize=QuantizeOptions(bits=4, range="paper"))
    assert choose_ranges(model, paper, [(s, {})]) is None


def test_samples_are_fewer_where_each_is_large():
    model = outlier_model()
    assert output_judge(model, [(samples(False, n=100), {})]).samples == 64
    big = Samples({"x": np.zeros((8, 32), np.float32)}, None, "test")
    assert output_judge(model, [(big, {}), (big, {})]).samples == 16  # every branch counts
    assert output_judge(model, [(big, {})], limit=3).samples == 3


class ScriptedJudge:
    """Says the corrected model's output error is ``corrected`` and any other model's ``plain``."""

    samples = 40

    def __init__(self, plain: float, corrected: float):
        self.plain, self.corrected, self.seen = plain, corrected, []

    def error(self, model) -> float:
        b = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc.b"))
        self.seen.append(b.copy())
        return self.plain if len(self.seen) == 1 else self.corrected


@pytest.mark.parametrize("plain, corrected, kept", [(1.0, 0.5, True), (0.5, 1.0, False), (0.5, 0.5, False)])
def test_bias_correction_with_a_judge_is_kept_only_where_it_lowers_the_output_error(plain, corrected, kept):
    model = conv_gemm_model()
    s = Samples({"x": np.random.default_rng(0).random((40, 2, 5, 5)).astype(np.float32)}, None, "test")
    options = QuantizeOptions(bits=3, exclude=("conv.w",))
    out = quantize_model(model, QuantizeOptions(bits=3, exclude=("conv.w",), bias_correction="off")).model
    cal = calibrate(model, [TensorSite("fc.w", (), "initializer")], s)
    cal.rounded(TensorSite("fc.w", (), "initializer"), numpy_helper.to_array(model.graph.initializer[2]),
                numpy_helper.to_array(out.graph.initializer[2]))
    judge = ScriptedJudge(plain, corrected)
    before = numpy_helper.to_array(out.graph.initializer[3]).copy()
    report = correct_biases(cal, out, write_tensor, judge)
    after = numpy_helper.to_array(out.graph.initializer[3])
    assert not np.array_equal(judge.seen[0], judge.seen[1])  # the trial was the corrected model
    assert np.array_equal(after, judge.seen[1]) is kept and np.array_equal(after, before) is not kept
    assert report.corrected == (("fc.w",) if kept else ())
    assert (report.error is None) is kept and (kept or "did not lower the output error on 40 samples" in report.error)
    assert quantize_model(model, options, samples=s).bias_correction is not None  # a real judge decides too


def test_before_retraining_only_rules_that_clamp_harder_are_tried():
    model = outlier_model(outlier=14.0)  # an outlier that carries the output, at 3 bits: static mse clamps it
    s = samples(live_first_input=True)
    free = choose_rules(model, {W: ()}, 3, output_judge(model, [(s, {})]))
    clamp = choose_rules(model, {W: ()}, 3, output_judge(model, [(s, {})]), clamp_only=True)
    assert free.rules[W] is RangeRule.PAPER  # one-shot error prefers keeping the largest weights
    assert clamp.rules[W] in (RangeRule.MSE, RangeRule.MAE) and clamp.runs < free.runs
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert make_codebook_by(w, 3, (), clamp.rules[W]).n1 <= make_codebook_by(w, 3, (), RangeRule.MSE).n1


def test_before_retraining_the_choice_stands_only_where_it_divides_the_output_error_enough():
    model, s = outlier_model(), samples(live_first_input=False)
    gain = choose_rules(model, {W: ()}, 4, output_judge(model, [(s, {})]))
    assert gain.error_static / gain.error_chosen > 10
    stands = choose_rules(model, {W: ()}, 4, output_judge(model, [(s, {})]), min_gain=10)
    assert stands.rules == gain.rules and not stands.kept_static
    kept = choose_rules(model, {W: ()}, 4, output_judge(model, [(s, {})]), min_gain=1e6)
    assert kept.kept_static and kept.rules == {W: RangeRule.PAPER} and kept.changed == {}
    assert kept.error_chosen == gain.error_chosen  # what the others would have given is still said
    assert "the static rules kept" in range_choice_summary(kept)
