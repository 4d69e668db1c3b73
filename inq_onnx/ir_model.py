"""``onnx_ir.Model`` in, ``onnx_ir.Model`` out: the public API takes either IR.

torch.onnx's exporter, onnxscript's optimizer and Olive pass models between steps as
``onnx_ir.Model``; inq-onnx works on ``onnx.ModelProto``. A model of the other IR is converted
at the edge (``onnx_ir.from_proto`` / ``onnx_ir.to_proto``, one copy each way) and the caller
gets back the type it gave. onnx-ir is optional (``pip install 'inq-onnx[ir]'``): nothing here
imports it unless an ``onnx_ir.Model`` was passed, which means it is installed.
"""

from __future__ import annotations

import sys
from typing import Any

import onnx
from onnx import external_data_helper

from inq_onnx.errors import UnsupportedModelError


def is_ir_model(model: Any) -> bool:
    """Whether ``model`` is an ``onnx_ir.Model`` (False without importing onnx-ir when it is not loaded)."""
    ir = sys.modules.get("onnx_ir")
    return ir is not None and isinstance(model, ir.Model)


def to_proto(model: Any) -> onnx.ModelProto:
    """The ``onnx.ModelProto`` of an ``onnx_ir.Model`` (a new message; ``model`` is left as it is)."""
    import onnx_ir

    proto = onnx_ir.to_proto(model)
    if any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(proto)):
        raise UnsupportedModelError("the onnx_ir.Model keeps some tensors in external files",
                                    "load them into memory first: onnx_ir.external_data.load_to_model(model)")
    return proto


def from_proto(proto: onnx.ModelProto) -> Any:
    import onnx_ir

    return onnx_ir.from_proto(proto)
