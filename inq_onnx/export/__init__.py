"""Export a quantized model: compact (b bits per weight, runs on stock ONNX Runtime), float, or codes.

    compact   each weight as its bit-packed b-bit codes plus 2^n2, decoded by a model-local
              function of standard ops (``compact``, ``decode_op``, ``packing``)
    float     a plain float model, no custom domain (``float_export``); ``decode`` undoes compact
    codes     int8 codes + JSON manifest for shift-based hardware (``codes``)
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from inq_onnx.errors import InvalidOptionError
from inq_onnx.export.codes import CodesReport, export_codes
from inq_onnx.export.compact import CompactReport, to_compact
from inq_onnx.export.float_export import decode, to_float
from inq_onnx.graph.io import load_model, save_model
from inq_onnx.ir_model import from_proto, is_ir_model, to_proto


class ExportFormat(str, enum.Enum):
    COMPACT = "compact"
    FLOAT = "float"
    CODES = "codes"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the model (compact / float), where, and the per-format report."""

    format: ExportFormat
    model: onnx.ModelProto | None
    path: Path | None
    report: CompactReport | CodesReport | None = None
    kept_float: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


def export(model: "onnx.ModelProto | onnx_ir.Model | str | os.PathLike", format: ExportFormat | str, *,
           output: str | os.PathLike | None = None, allow_float: bool = False) -> ExportResult:
    """Export ``model`` (in memory or a path) as ``format``; write it to ``output`` when given.

    ``model`` is an ``onnx.ModelProto`` or an ``onnx_ir.Model`` (either left untouched) or a
    path; ``result.model`` is of the type given (a ModelProto for a path). ``codes`` needs
    ``output`` (a folder). ``allow_float`` keeps weights that are not on their codebook float
    (compact) or leaves them out (codes) instead of raising ExportError.
    """
    if is_ir_model(model):
        result = export(to_proto(model), format, output=output, allow_float=allow_float)
        return dataclasses.replace(result, model=from_proto(result.model) if result.model is not None else None)
    try:
        format = ExportFormat(format)
    except ValueError:
        choices = ", ".join(f.value for f in ExportFormat)
        raise InvalidOptionError(f"unknown export format {format!r}", f"pass one of {choices}") from None
    loaded, source = load_model(model)
    if format is ExportFormat.CODES:
        if output is None:
            raise InvalidOptionError("the codes export writes a folder but no output was given", "pass -o FOLDER")
        report = export_codes(loaded, output, allow_float=allow_float)
        return ExportResult(format, None, report.path, report, report.kept_float)
    if format is ExportFormat.COMPACT:
        out, report = to_compact(loaded, allow_float=allow_float, in_place=source.path is not None)
        kept, notes = report.kept_float, report.notes
    else:
        out, report, kept, notes = to_float(loaded), None, (), ()
    path = save_model(out, output, source=source, keep_data=source.path is None) if output is not None else None
    return ExportResult(format, out, path, report, kept, notes)


class _CallableModule(types.ModuleType):
    """Lets ``inq_onnx.export(model, "compact")`` call :func:`export` while ``inq_onnx.export``
    stays this package, so ``import inq_onnx.export.compact`` keeps working."""

    def __call__(self, *args, **kwargs) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["CodesReport", "CompactReport", "ExportFormat", "ExportResult", "decode", "export", "to_compact", "to_float"]
