"""Fix graph input dims to the training shape, and replace ``dim_value: -1`` by a dim_param.

ORT training on symbolic or ``-1`` dims segfaults or fails in a Mul gradient (cls); static
shapes also let the Resize / ConvTranspose rewrites emit static Reshapes. The artifacts are
then tied to that shape; the inference model is rebuilt from the original graph.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import onnx

from inq_onnx.errors import InvalidOptionError
from inq_onnx.graph.passes import PassResult, copy_model


def _check_shape(value: onnx.ValueInfoProto, shape: Sequence[int]) -> None:
    dims = value.type.tensor_type.shape.dim
    if value.type.tensor_type.HasField("shape") and len(dims) != len(shape):
        raise InvalidOptionError(
            f"input '{value.name}' has rank {len(dims)} but the pinned shape {tuple(shape)} has rank {len(shape)}",
            f"give '{value.name}' a shape of rank {len(dims)}",
        )
    for axis, (dim, size) in enumerate(zip(dims, shape)):
        if int(size) < 1 or (dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size):
            raise InvalidOptionError(
                f"input '{value.name}' dim {axis} cannot be pinned to {size}",
                f"use a positive size that matches the declared {dim.dim_value or 'dim'}",
            )


def _fix_minus_one(value: onnx.ValueInfoProto) -> int:
    fixed = 0
    for axis, dim in enumerate(value.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value < 0:
            dim.dim_param = f"{value.name}_dim{axis}"
            fixed += 1
    return fixed


def pin_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> PassResult:
    """Set every dim of the named graph inputs; turn any other ``-1`` dim into a dim_param."""
    inputs = {v.name: v for v in model.graph.input}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise InvalidOptionError(f"no graph input named {unknown}", f"pin one of {sorted(inputs)}")
    out = copy_model(model)
    notes, changed = [], 0
    for value in out.graph.input:
        if value.name in shapes:
            shape = tuple(int(s) for s in shapes[value.name])
            _check_shape(value, shape)
            tensor_shape = value.type.tensor_type.shape
            tensor_shape.Clear()
            for size in shape:
                tensor_shape.dim.add().dim_value = size
            notes.append(f"input '{value.name}' pinned to {shape}")
            changed += 1
    for value in list(out.graph.input) + list(out.graph.output) + list(out.graph.value_info):
        fixed = _fix_minus_one(value)
        if fixed:
            notes.append(f"'{value.name}': {fixed} dims written as -1 became symbolic")
            changed += fixed
    return PassResult(out if changed else model, changed, tuple(notes))
