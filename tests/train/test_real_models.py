"""Real third-party models (../shared/models): prepare, build artifacts, two training steps."""

import numpy as np
import onnx
import pytest
from tests.train.train_helpers import MODELS, run

from inq_onnx.train.artifacts import build_artifacts
from inq_onnx.train.losses import LossSpec
from inq_onnx.train.rewrites import prepare_for_training, sample_feeds, unsupported_gradient_ops
from inq_onnx.train.session import TrainingSession

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MODELS.is_dir(), reason=f"real models not found at {MODELS}"),
]

CASES = {
    "lenet5_mnist": ({"input": (8, 1, 28, 28)}, {}),
    "resnet8_mnist": ({"input": (8, 1, 28, 28)}, {}),
    "mlp_digits": ({"input": (8, 64)}, {}),
    "ch_ppocr_mobile_v2.0_cls_infer": ({"x": (2, 3, 48, 192)}, {}),
    "ch_PP-OCRv4_det_infer": ({"x": (1, 3, 128, 128)}, {}),
    "320n": ({"images": (1, 3, 320, 320)}, {}),
    "silero_vad": ({"input": (2, 576), "state": (2, 2, 128)}, {"sr": np.array(16000, np.int64)}),
    "silero_vad_half": ({"input": (2, 576), "state": (2, 2, 128)}, {}),
}


def _trainable(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
            and np.prod(t.dims) > 1 and not t.name.startswith("inq_") and not t.name.endswith("/ones")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepared_model_trains_and_keeps_the_forward(name, tmp_path):
    shapes, pins = CASES[name]
    original = onnx.load(str(MODELS / f"{name}.onnx"))
    prepared, _ = prepare_for_training(original, input_shapes=shapes, pins=pins)
    assert unsupported_gradient_ops(prepared) == []
    feeds = sample_feeds(prepared, shapes, seed=1)
    want = run(original, {**feeds, **pins})
    got = run(prepared, feeds)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=1e-4, rtol=0)

    artifacts = build_artifacts(prepared, trainable=_trainable(prepared), folder=tmp_path, loss=LossSpec(kind="distill-mse"))
    session = TrainingSession(artifacts, threads=2)
    target = got[[o.name for o in prepared.graph.output].index(artifacts.loss.output)]
    step_inputs = [feeds[n] for n in artifacts.inputs[:-1]] + [target]
    assert session.eval_step(*step_inputs) < 1e-8
    noise = np.random.default_rng(0)
    session.set_parameters({k: v * (1 + 0.05 * noise.standard_normal(v.shape)) for k, v in session.parameters().items()})
    for _ in range(2):
        session.reset_grad()
        loss = session.train_step(*step_inputs)
        assert np.isfinite(loss) and loss > 0
        assert any(np.any(g != 0) for g in session.gradients().values())
        session.adamw_step(1e-5)


@pytest.mark.parametrize("name,blockers", [
    ("ch_ppocr_mobile_v2.0_cls_infer", ["HardSigmoid"]),
    ("ch_PP-OCRv4_det_infer", ["HardSigmoid", "Resize", "ConvTranspose"]),
    ("320n", ["Resize"]),
    ("silero_vad", ["If"]),
    ("silero_vad_half", ["If"]),
    ("lenet5_mnist", []),
])
def test_blockers_of_the_originals_are_known_up_front(name, blockers):
    assert unsupported_gradient_ops(onnx.load(str(MODELS / f"{name}.onnx"))) == blockers


def test_mlp_probabilities_train_with_cross_entropy_on_real_digits(tmp_path):
    data = np.load(MODELS.parent / "data" / "digits.npz")
    x = (data["x_train"][:64].reshape(64, 64) / 16.0).astype(np.float32)
    labels = data["y_train"][:64]
    original = onnx.load(str(MODELS / "mlp_digits.onnx"))
    prepared, _ = prepare_for_training(original, input_shapes={"input": (64, 64)})
    trainable = [t.name for t in prepared.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    artifacts = build_artifacts(prepared, trainable=trainable, folder=tmp_path, loss=LossSpec(kind="cross-entropy"))
    assert artifacts.loss.output == "probabilities" and artifacts.loss.probabilities
    session = TrainingSession(artifacts, threads=2)
    probabilities = run(original, {"input": x})[1]
    shifted = probabilities.astype(np.float64) + 1e-7  # SoftmaxCrossEntropyLoss renormalises p + eps
    nll = -np.mean(np.log(shifted[np.arange(64), labels] / shifted.sum(axis=1)))
    assert session.eval_step(x, labels) == pytest.approx(nll, rel=1e-4)
    losses = []
    for _ in range(8):
        session.reset_grad()
        losses.append(session.train_step(x, labels))
        session.adamw_step(3e-3)
    assert losses[-1] < losses[0] / 2
