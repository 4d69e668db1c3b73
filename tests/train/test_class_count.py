"""The number of classes labels are checked against: the static class axis (1) of the loss output."""

import onnx
from onnx import helper

from inq_onnx.train.losses import class_count
from tests.conftest import FIXTURE, conv_gemm_model


def test_static_class_axis_of_the_loss_output():
    assert class_count(onnx.load(str(FIXTURE))) == 10
    assert class_count(conv_gemm_model()) == 4
    assert class_count(conv_gemm_model(), "y") == 4


def test_unknown_when_dynamic_rank_1_or_no_such_output():
    model = conv_gemm_model()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    assert class_count(model) is None
    model = conv_gemm_model()
    del model.graph.output[0].type.tensor_type.shape.dim[1]
    assert class_count(model) is None
    assert class_count(conv_gemm_model(), "nope") is None  # reported where the loss is built
    model = conv_gemm_model()
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    assert class_count(model) is None
