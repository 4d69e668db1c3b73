"""Graph rewrites that make third-party ONNX graphs trainable by ORT 1.19.2, one pass a file."""

from inq_onnx.train.rewrites.activations_to_primitives import activations_to_primitives
from inq_onnx.train.rewrites.batchnorm_to_affine import (
    affine_from_batchnorm, batchnorm_from_affine, batchnorm_to_affine,
)
from inq_onnx.train.rewrites.clip_opset_bump import clip_opset_bump
from inq_onnx.train.rewrites.constants_to_initializers import constants_to_initializers
from inq_onnx.train.rewrites.convtranspose_to_conv_shuffle import convtranspose_to_conv_shuffle
from inq_onnx.train.rewrites.depth_to_space_to_transpose import depth_to_space_to_transpose
from inq_onnx.train.rewrites.fold_if import fold_if
from inq_onnx.train.rewrites.globalmaxpool_to_maxpool import globalmaxpool_to_maxpool
from inq_onnx.train.rewrites.groupnorm_to_moments import groupnorm_to_moments
from inq_onnx.train.rewrites.gradient_support import (
    GRADIENT_BLOCKERS, GradientStatus, OpGradient, gradient_report, unsupported_gradient_ops,
)
from inq_onnx.train.rewrites.hardsigmoid_to_minmax import hardsigmoid_to_minmax
from inq_onnx.train.rewrites.instancenorm_to_moments import instancenorm_to_moments
from inq_onnx.train.rewrites.lpnorm_to_reduce import lpnorm_to_reduce
from inq_onnx.train.rewrites.lower_ir_version import lower_ir_version
from inq_onnx.train.rewrites.lrn_to_avgpool import lrn_to_avgpool
from inq_onnx.train.rewrites.mvn_to_moments import mvn_to_moments
from inq_onnx.train.rewrites.pin_input_shapes import pin_input_shapes
from inq_onnx.train.rewrites.prepare import prepare_for_training, sample_feeds
from inq_onnx.train.rewrites.reduce_to_maxpool import reduce_to_maxpool
from inq_onnx.train.rewrites.reduce_to_reducesum import reduce_to_reducesum
from inq_onnx.train.rewrites.resize_to_repeat import resize_to_repeat
from inq_onnx.train.rewrites.softmax_pattern_to_softmax import softmax_pattern_to_softmax

__all__ = [
    "GRADIENT_BLOCKERS",
    "GradientStatus",
    "OpGradient",
    "activations_to_primitives",
    "affine_from_batchnorm",
    "batchnorm_from_affine",
    "batchnorm_to_affine",
    "clip_opset_bump",
    "constants_to_initializers",
    "convtranspose_to_conv_shuffle",
    "depth_to_space_to_transpose",
    "fold_if",
    "globalmaxpool_to_maxpool",
    "gradient_report",
    "groupnorm_to_moments",
    "hardsigmoid_to_minmax",
    "instancenorm_to_moments",
    "lower_ir_version",
    "lpnorm_to_reduce",
    "lrn_to_avgpool",
    "mvn_to_moments",
    "pin_input_shapes",
    "prepare_for_training",
    "reduce_to_maxpool",
    "reduce_to_reducesum",
    "resize_to_repeat",
    "sample_feeds",
    "softmax_pattern_to_softmax",
    "unsupported_gradient_ops",
]
