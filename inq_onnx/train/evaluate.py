"""Validation figures after each INQ step, against the float model."""

from __future__ import annotations

import onnx

from inq_onnx.data import Samples
from inq_onnx.verify import fidelity


def evaluate(reference: onnx.ModelProto, model: onnx.ModelProto, val: Samples, pins: dict | None = None) -> dict:
    f = fidelity(reference, model, val, pins=pins or {})
    out = {"agreement": f.top1_agreement, "sqnr_db": round(f.sqnr_db, 2) if f.sqnr_db != float("inf") else None}
    if f.accuracy_quantized is not None:
        out.update(val_accuracy=f.accuracy_quantized, float_accuracy=f.accuracy_float)
    return out
