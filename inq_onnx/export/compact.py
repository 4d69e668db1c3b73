"""Compact export: every quantized weight becomes its b-bit codes, decoded by stock ONNX Runtime.

Each weight the quantization metadata lists (initializer or Constant node, main graph or subgraph)
is checked against its codebook (``sites``, ``encoding``) and replaced as ``layout`` describes: small
models' codes in one packed stream per bit-width, read by the model-local function
``inq_onnx.Unpack{b}...``, big ones' in a stream of whole uint8/uint16 fields per weight, read by a
Cast, with a table from ``inq_onnx.Table{b}e{m}`` (``decode_op``); then per weight a lookup (and a
reshape unless the lookup gives its shape) scaled by 2^n2, under the weight's own name.
Nothing else changes: names, opsets and metadata are kept; an IR version below 8 (which predates
model-local functions) becomes 8 and ``float_export.decode`` restores it.

Invariants checked on the way out: every encoded weight decodes (in the graph's float32 steps) to
exactly its quantized value, and the model passes ``onnx.checker``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import onnx
from onnx import helper

from inq_onnx.errors import ExportError
from inq_onnx.export import decode_op, layout
from inq_onnx.export.packing import Fields
from inq_onnx.export.sites import (COMPACT_KEY, Outcome, dtype_name, encode_listed, is_compact,
                                   listed_sites, refuse_or_keep)
from inq_onnx.graph.io import PROTOBUF_LIMIT
from inq_onnx.graph.readers import check_with_onnx
from inq_onnx.graph.passes import copy_model
from inq_onnx.graph.tensors import all_names, default_opset, get_graph, tensor_proto

FORMAT_VERSION = 1
FUNCTIONS_IR_VERSION = 8


@dataclass(frozen=True)
class CompactTensor:
    name: str
    where: str
    bits: int
    shape: tuple[int, ...]
    dtype: str
    per_channel: bool
    packed_bytes: float
    """Its share of the graph's packed stream: n·b / 8."""


@dataclass(frozen=True)
class CompactReport:
    tensors: tuple[CompactTensor, ...]
    kept_float: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def packed_bytes(self) -> float:
        return sum(t.packed_bytes for t in self.tensors)


def to_compact(model: onnx.ModelProto, *, allow_float: bool = False,
               in_place: bool = False) -> tuple[onnx.ModelProto, CompactReport]:
    """The compact form of a quantized model (a new model, ``model`` left untouched; with
    ``in_place`` the caller gives ``model`` up, and no second copy of a big model is made).

    Raises ExportError if a listed weight is off its codebook (or cannot be decoded exactly),
    unless ``allow_float``: then that weight stays float and the report says which and why.
    """
    if is_compact(model):
        raise ExportError("the model is already in the compact format", "export the quantized float model instead")
    opset = default_opset(model)
    if opset < decode_op.MIN_OPSET:
        raise ExportError(f"the model uses opset {opset}; the decode function needs {decode_op.MIN_OPSET} or later",
                          "convert it with onnx.version_converter.convert_version(model, 11) before quantizing")
    original_ir = model.ir_version
    out = model if in_place else copy_model(model)
    outcomes = []
    for item in listed_sites(out):
        proto = tensor_proto(out, item.site)
        outcomes.append(encode_listed(out, item, proto, exact=True))
        if in_place and outcomes[-1].encoded is not None:
            drop_values(proto)  # its codes replace it: free the float copy before the next weight
    kept = refuse_or_keep(outcomes, allow_float, "compact codes")
    done = [o for o in outcomes if o.encoded is not None]
    fresh = layout.FreshNames(all_names(out.graph))
    by_graph: dict[tuple, list[Outcome]] = defaultdict(list)
    for outcome in done:
        by_graph[outcome.listed.site.graph_path].append(outcome)
    layouts = set()
    for path in sorted(by_graph, key=len, reverse=True):  # children first: parents' node indices stay valid
        layouts |= layout.rewrite_graph(get_graph(out, path), by_graph[path], fresh, opset, in_subgraph=bool(path))
    notes = finish(out, original_ir, layouts, opset, fresh.prefix)
    check(out)
    tensors = tuple(CompactTensor(o.listed.site.name, o.listed.site.describe(), o.listed.bits, o.encoded.shape,
                                  dtype_name(o.data_type), not o.encoded.uniform,
                                  o.encoded.codes.size * o.listed.bits / 8) for o in done)
    return out, CompactReport(tensors, tuple(kept), tuple(notes))


def drop_values(proto: onnx.TensorProto) -> None:
    for field_name in ("raw_data", "float_data", "int32_data", "double_data"):
        proto.ClearField(field_name)


def finish(out: onnx.ModelProto, original_ir: int, widths: set[Fields], opset: int, prefix: str) -> list[str]:
    """Add the decode functions, the domain, the IR version they need and the compact stamp."""
    notes = []
    for fields in sorted(widths, key=lambda f: (f.bits, f.radix, f.element, f.m)):
        out.functions.append(decode_op.function(fields, opset))
    if widths:
        out.opset_import.append(helper.make_opsetid(decode_op.DOMAIN, decode_op.DOMAIN_VERSION))
    if widths and out.ir_version < FUNCTIONS_IR_VERSION:
        notes.append(f"IR version {out.ir_version} raised to {FUNCTIONS_IR_VERSION} (model-local functions need it); "
                     "decode restores it")
        out.ir_version = FUNCTIONS_IR_VERSION
    stamp = {"format": FORMAT_VERSION, "ir_version": original_ir, "prefix": prefix}
    out.metadata_props.add(key=COMPACT_KEY, value=json.dumps(stamp, sort_keys=True))
    return notes


def check(model: onnx.ModelProto) -> None:
    """The written model must pass onnx.checker; a failure here is our bug, reported as such.
    (Above 2 GB the checker needs a file; ``graph.io.save_model`` writes external data then.)"""
    if model.ByteSize() >= PROTOBUF_LIMIT:
        return
    try:
        check_with_onnx(model, "the compact model")
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise ExportError(f"the compact model fails onnx.checker: {first}",
                          "report this with the model attached; --format float still works") from e

