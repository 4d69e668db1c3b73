"""Raise the default opset to 12: ORT builds the Clip gradient from LessOrEqual (opset 12+).

From opset 11 only the version number changes (no op used for float math changed meaning
between 11 and 12); older models go through ``onnx.version_converter``.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from inq_onnx.errors import UnsupportedModelError
from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import default_opset

MIN_TRAINING_OPSET = 12


def clip_opset_bump(model: onnx.ModelProto) -> PassResult:
    """Return ``model`` with default opset >= 12 (unchanged when it already is)."""
    old = default_opset(model)
    if old >= MIN_TRAINING_OPSET:
        return PassResult(model)
    if old == 11:
        out = copy_model(model)
        for op in out.opset_import:
            if op.domain in ("", "ai.onnx"):
                op.version = MIN_TRAINING_OPSET
    else:
        try:
            out = version_converter.convert_version(model, MIN_TRAINING_OPSET)
        except Exception as error:  # noqa: BLE001 - the converter raises many kinds
            raise UnsupportedModelError(
                f"the model's opset {old} could not be converted to {MIN_TRAINING_OPSET} ({error})",
                "convert the model to opset 12 or newer with the exporter that made it",
            ) from error
    return PassResult(out, 1, (f"default opset {old} -> {MIN_TRAINING_OPSET} (Clip gradient needs LessOrEqual)",))
