"""The training copy gets the IR version ONNX Runtime reads; the user's model keeps its own.

The runtime's limit is pinned to IR 10 (the training build, 1.19.2), so that a newer ONNX
Runtime, which reads IR 11 itself, runs the same lowering."""

import onnx
import pytest

from inq_onnx.errors import UnsupportedModelError
from inq_onnx.graph import readers
from inq_onnx.graph.readers import RuntimeLimits
from inq_onnx.train.rewrites import lower_ir_version, prepare_for_training
from tests.conftest import conv_gemm_model
from tests.train.train_helpers import frozen


@pytest.fixture(autouse=True)
def runtime_reads_ir_10(monkeypatch):
    real = readers.runtime_limits()
    monkeypatch.setattr(readers, "runtime_limits", lambda: RuntimeLimits(real.version, 10, real.opset))


def ir(version: int) -> onnx.ModelProto:
    model = conv_gemm_model()
    model.ir_version = version
    return model


def test_ir_11_is_lowered_to_10_with_a_note_and_the_input_untouched():
    model = ir(11)
    before = frozen(model)
    result = lower_ir_version(model)
    assert result.model.ir_version == 10 and result.changed == 1
    assert result.notes[0].startswith("IR version 11 -> 10 (ONNX Runtime ")
    assert frozen(model) == before


def test_ir_10_is_unchanged():
    model = ir(10)
    assert lower_ir_version(model).model is model


def test_an_ir_11_feature_is_refused():
    model = ir(11)
    model.graph.initializer.append(onnx.TensorProto(name="fp4", data_type=23, dims=[2], raw_data=b"\x21"))
    with pytest.raises(UnsupportedModelError, match="loads at most IR version 10, and it uses FLOAT4E2M1"):
        lower_ir_version(model)


def test_prepare_for_training_lowers_first():
    prepared, steps = prepare_for_training(ir(11), input_shapes={"x": (4, 2, 5, 5)})
    assert steps[0][0] == "lower_ir_version" and steps[0][1].changed == 1
    assert prepared.ir_version == 10
