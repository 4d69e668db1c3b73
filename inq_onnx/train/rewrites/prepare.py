"""Compose the rewrites that make a third-party graph trainable by ORT 1.19.2."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from inq_onnx.errors import InvalidOptionError
from inq_onnx.graph.passes import PassResult, run_passes
from inq_onnx.train.rewrites.activations_to_primitives import activations_to_primitives
from inq_onnx.train.rewrites.batchnorm_to_affine import batchnorm_to_affine
from inq_onnx.train.rewrites.clip_opset_bump import clip_opset_bump
from inq_onnx.train.rewrites.constants_to_initializers import constants_to_initializers
from inq_onnx.train.rewrites.convtranspose_to_conv_shuffle import convtranspose_to_conv_shuffle
from inq_onnx.train.rewrites.depth_to_space_to_transpose import depth_to_space_to_transpose
from inq_onnx.train.rewrites.fold_if import fold_if
from inq_onnx.train.rewrites.globalmaxpool_to_maxpool import globalmaxpool_to_maxpool
from inq_onnx.train.rewrites.groupnorm_to_moments import groupnorm_to_moments
from inq_onnx.train.rewrites.hardsigmoid_to_minmax import hardsigmoid_to_minmax
from inq_onnx.train.rewrites.layernorm_outputs import layernorm_outputs
from inq_onnx.train.rewrites.instancenorm_to_moments import instancenorm_to_moments
from inq_onnx.train.rewrites.lpnorm_to_reduce import lpnorm_to_reduce
from inq_onnx.train.rewrites.lower_ir_version import lower_ir_version
from inq_onnx.train.rewrites.lrn_to_avgpool import lrn_to_avgpool
from inq_onnx.train.rewrites.mvn_to_moments import mvn_to_moments
from inq_onnx.train.rewrites.pin_input_shapes import pin_input_shapes
from inq_onnx.train.rewrites.reduce_to_maxpool import reduce_to_maxpool
from inq_onnx.train.rewrites.reduce_to_reducesum import reduce_to_reducesum
from inq_onnx.train.rewrites.resize_to_repeat import resize_to_repeat
from inq_onnx.train.rewrites.softmax_pattern_to_softmax import softmax_pattern_to_softmax


def _declared_shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    if not value.type.tensor_type.HasField("shape") or any(d.dim_value <= 0 for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _training_shapes(model: onnx.ModelProto, input_shapes, pins) -> dict[str, tuple[int, ...]]:
    names = [v.name for v in model.graph.input]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise InvalidOptionError(f"input_shapes names {unknown}, not graph inputs", f"give shapes for {names}")
    shapes = {}
    for value in model.graph.input:
        if value.name in pins:
            continue
        shape = input_shapes.get(value.name, _declared_shape(value))
        if shape is None:
            raise InvalidOptionError(
                f"input '{value.name}' has no static shape to train with",
                f"pass input_shapes={{'{value.name}': (...)}} with the batch and sizes you will train on",
            )
        shapes[value.name] = tuple(int(s) for s in shape)
    return shapes


def sample_feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, np.ndarray]:
    """Random feeds of the given shapes: floats uniform in [-1, 1), other types zeros."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = tuple(shapes[value.name])
        floating = np.issubdtype(dtype, np.floating)
        feeds[value.name] = rng.uniform(-1, 1, shape).astype(dtype) if floating else np.zeros(shape, dtype)
    return feeds


def prepare_for_training(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]],
    pins: Mapping[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, list[tuple[str, PassResult]]]:
    """Lower the IR version to what ORT reads, fold If, pin shapes, then rewrite what ORT cannot
    differentiate; return each step.

    Every input that is not in ``pins`` needs a static shape, from ``input_shapes`` or its
    declaration. The result is tied to those shapes and pinned values.
    """
    pins = dict(pins or {})
    shapes = _training_shapes(model, dict(input_shapes), pins)

    def pin(m):
        return pin_input_shapes(m, shapes)

    def fold(m):
        return fold_if(m, pins, [sample_feeds(m, shapes, seed) for seed in (0, 1)])

    pin.__name__, fold.__name__ = "pin_input_shapes", "fold_if"
    return run_passes(model, [
        lower_ir_version, fold, pin, constants_to_initializers, hardsigmoid_to_minmax, clip_opset_bump,
        batchnorm_to_affine, resize_to_repeat, convtranspose_to_conv_shuffle,
        globalmaxpool_to_maxpool, softmax_pattern_to_softmax, reduce_to_maxpool, activations_to_primitives,
        depth_to_space_to_transpose, instancenorm_to_moments, reduce_to_reducesum, lrn_to_avgpool,
        lpnorm_to_reduce, groupnorm_to_moments, mvn_to_moments, layernorm_outputs,
    ])
