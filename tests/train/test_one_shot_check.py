"""The one-shot model a finished run is compared with: same graph, in the run's codebooks."""

import numpy as np

from inq_onnx.data import Samples
from inq_onnx.graph.fingerprint import structure_fingerprint
from inq_onnx.incremental import InqOptions, check_sidecar, partition_step, start
from inq_onnx.options import QuantizeOptions
from inq_onnx.train.one_shot_check import one_shot_candidate
from tests.conftest import conv_gemm_model


def without_conv_bias():
    model = conv_gemm_model()
    del model.graph.node[0].input[2]
    del model.graph.initializer[1]  # conv.b
    return model


def test_the_candidate_keeps_the_graph_and_fits_the_finished_sidecar():
    model = without_conv_bias()
    inq = InqOptions(QuantizeOptions(bits=3, bias_correction="on"), schedule=(1.0,))
    samples = Samples({"x": np.random.default_rng(0).random((16, 2, 5, 5)).astype(np.float32)}, None, "test")
    _, done = partition_step(model, start(model, inq))
    candidate = one_shot_candidate(model, inq, done, samples)
    assert structure_fingerprint(candidate) == structure_fingerprint(model)  # no bias was added to the Conv
    assert len(candidate.graph.initializer) == len(model.graph.initializer)
    check_sidecar(candidate, done, inq)


def test_another_teacher_graph_is_not_compared():
    inq = InqOptions(QuantizeOptions(bits=3), schedule=(1.0,))
    model = conv_gemm_model()
    _, done = partition_step(model, start(model, inq))
    samples = Samples({"x": np.zeros((4, 2, 5, 5), np.float32)}, None, "test")
    assert one_shot_candidate(without_conv_bias(), inq, done, samples) == \
        "the teacher is another graph than the model (--teacher)"
