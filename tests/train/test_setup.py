"""Set-up checks that run before ONNX Runtime is asked to build anything."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from inq_onnx.errors import TrainingError
from inq_onnx.train.setup import check_trainable_ops
from tests.conftest import make_model, tensor


def test_an_if_left_on_the_gradient_path_is_named_with_the_fix():
    f = TensorProto.FLOAT
    branch = lambda name: helper.make_graph([helper.make_node("Identity", ["c1"], [name])], name, [],
                                            [helper.make_tensor_value_info(name, f, [1, 2, 3, 3])])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"]),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch("a"), else_branch=branch("b"))]
    model = make_model(nodes, [helper.make_tensor_value_info("x", f, [1, 1, 5, 5]),
                               helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                       [helper.make_tensor_value_info("y", f, [1, 2, 3, 3])],
                       [tensor("w", np.ones((2, 1, 3, 3), np.float32))])
    with pytest.raises(TrainingError, match=r"cannot train through If.*--pin"):
        check_trainable_ops(model)


def test_a_trainable_graph_passes(tmp_path):
    from tests.conftest import conv_gemm_model
    check_trainable_ops(conv_gemm_model())


def test_a_refusal_lists_every_op_with_its_status_and_a_way_out_that_exists():
    from inq_onnx.train.rewrites import prepare_for_training
    from tests.train.train_helpers import model_from_text, rand

    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,5,5] x) => (float[N,4,5,5] y) {
  c = Conv <pads = [1,1,1,1]> (x, W)
  h = HardSigmoid (c)
  y = CumSum (h, axis)
}
"""
    model = model_from_text(text, W=rand(4, 3, 3, 3), axis=np.array(1))
    prepared, _ = prepare_for_training(model, input_shapes={"x": (2, 3, 5, 5)})
    with pytest.raises(TrainingError) as error:
        check_trainable_ops(prepared, model)
    message = str(error.value)
    assert "cannot train through CumSum (CumSum: blocks training (no gradient builder)" in message
    assert "HardSigmoid: trains through a rewrite (hardsigmoid_to_minmax)" in message and "Conv: trains" in message
    assert "To fix this, for CumSum, quantize one shot without --data, or run `inq-onnx step`" in message
    assert "exclude" not in message
