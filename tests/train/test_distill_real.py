"""Distillation over every float output and auto-picked layer outputs on real models: the
float teacher (the user's graph, with extra outputs) and the training copy agree on every
term's tensor, so the loss of the untouched weights is ~0 and a perturbed copy learns."""

import numpy as np
import onnx
import pytest
from tests.train.train_helpers import MODELS

from inq_onnx.data import Samples
from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.feeder import Feeder
from inq_onnx.train.options import TrainOptions
from inq_onnx.train.rewrites import prepare_for_training
from inq_onnx.train.rewrites.opset_raise import raise_opset
from inq_onnx.train.session import TrainingSession
from inq_onnx.train.setup import loss_spec
from tests.train.test_real_models import _trainable
from tests.train.train_helpers import run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MODELS.is_dir(), reason=f"real models not found at {MODELS}"),
]

CASES = {
    "silero_vad_half": {"input": (2, 576), "state": (2, 2, 128)},
    "ch_ppocr_mobile_v2.0_cls_infer": {"x": (2, 3, 48, 192)},
}


def _samples(shapes: dict, n: int = 4) -> Samples:
    rng = np.random.default_rng(0)
    inputs = {"input": rng.uniform(-0.3, 0.3, (n, 576)), "state": np.zeros((n, 2, 128))} if "state" in shapes else \
        {"x": rng.uniform(-1, 1, (n, 3, 48, 192))}
    return Samples({k: v.astype(np.float32) for k, v in inputs.items()}, None, "test",
                   {"state": 1} if "state" in shapes else None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_output_and_auto_layer_outputs_match_the_teacher_at_the_start(name, tmp_path):
    shapes = CASES[name]
    model = onnx.load(str(MODELS / f"{name}.onnx"))
    prepared, _ = prepare_for_training(model, input_shapes=shapes)
    train = _samples(shapes)
    spec = loss_spec(TrainOptions(loss="distill", distill_tensors="auto"), train, model, {}, prepared)
    terms = [t.tensor for t in spec.distill]
    assert terms[:len(model.graph.output)] == [o.name for o in model.graph.output]  # silero: output and stateN
    assert len(terms) >= len(model.graph.output) + 3
    artifacts = build_artifacts(prepared, trainable=_trainable(prepared), folder=tmp_path, loss=spec)
    session = TrainingSession(artifacts, threads=2)
    feeder = Feeder(train, artifacts.loss, artifacts.inputs, teacher_model=model, pins={})
    feeds = feeder.feeds(np.arange(2))
    assert session.eval_step(*feeds) < 1e-6
    noise = np.random.default_rng(1)
    session.set_parameters({k: v * (1 + 0.05 * noise.standard_normal(v.shape)) for k, v in session.parameters().items()})
    first = session.eval_step(*feeds)
    for _ in range(3):
        session.reset_grad()
        session.train_step(*feeds)
        session.adamw_step(1e-4)
    assert 0 < session.eval_step(*feeds) < first


def test_the_opset_raise_keeps_a_real_models_outputs():
    model = onnx.load(str(MODELS / "ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    prepared, _ = prepare_for_training(model, input_shapes={"x": (2, 3, 48, 192)})
    raised = raise_opset(prepared, 13).model
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    np.testing.assert_allclose(run(raised, {"x": x})[0], run(prepared, {"x": x})[0], atol=1e-6)
