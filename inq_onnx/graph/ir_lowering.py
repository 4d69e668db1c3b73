"""Lower a model's IR version when it uses nothing the newer versions added.

ONNX Runtime refuses a model whose IR version is above the newest it knows, even when the model
uses nothing that version added: the training build (1.19.2) reads IR 10, and onnx >= 1.18's
``make_model`` stamps IR 11 or later. A copy with the lower number is then the same model to
ONNX Runtime; what each version added (onnx.proto's version notes) decides whether it is.
Only the ``ir_version`` field changes: the copy's graph, opsets and metadata are the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import onnx
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

# Lowering never goes below IR 10, which every ONNX Runtime we support reads, so the tables start
# at IR 11. onnx.proto, IR 11: FLOAT4E2M1 and the multi-device messages; 12: FLOAT8E8M0;
# 13: UINT2, INT2; 14: FLOAT6E2M3, FLOAT6E3M2 (and TypeProto.Opaque outside ONNX-ML builds,
# which ONNX Runtime's own ONNX-ML build has always read).
NEWEST_KNOWN_IR = 14
DATA_TYPES_ADDED = {23: ("FLOAT4E2M1", 11), 24: ("FLOAT8E8M0", 12), 25: ("UINT2", 13), 26: ("INT2", 13),
                    27: ("FLOAT6E2M3", 14), 28: ("FLOAT6E3M2", 14)}
FIELDS_ADDED = {("ModelProto", 26): ("the multi-device configuration", 11),
                ("NodeProto", 10): ("multi-device annotations", 11)}
"""(message, field number): what it is, the IR version that added it. By number, because an
older onnx reads these fields as unknown ones."""
OLDEST_DATA_TYPES = 22  # the data types of IR 10 are numbered 1 to 22

DATA_TYPE_FIELDS = {"TensorProto": "data_type", "TypeProto.Tensor": "elem_type",
                    "TypeProto.SparseTensor": "elem_type", "TypeProto.Map": "key_type"}
DATA_TYPE_ATTRIBUTES = ("to", "dtype", "output_dtype", "stash_type", "softmax_precision")
"""Integer attributes of ONNX operators whose value is a data type (Cast's ``to``...)."""

NAMED = {"TensorProto": "tensor", "SparseTensorProto": "sparse tensor", "ValueInfoProto": "value",
         "NodeProto": "node", "AttributeProto": "attribute", "GraphProto": "graph", "FunctionProto": "function"}


@dataclass(frozen=True)
class Lowering:
    """A model at the IR version asked for, or why it cannot be lowered to it."""

    model: onnx.ModelProto | None
    """The input itself when already at or below the version, else a lowered copy; None when it cannot be."""
    reason: str = ""


def lower_ir(model: onnx.ModelProto, target: int) -> Lowering:
    """``model`` with IR version ``target``, if it uses nothing that a newer version added."""
    if model.ir_version <= target:
        return Lowering(model)
    reason = why_not_lowerable(model, target)
    if reason:
        return Lowering(None, reason)
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    lowered.ir_version = target
    return Lowering(lowered)


def why_not_lowerable(model: onnx.ModelProto, target: int) -> str:
    """Why ``model`` cannot be given IR version ``target`` ("" when it can)."""
    if model.ir_version <= target:
        return ""
    if model.ir_version > NEWEST_KNOWN_IR:
        return (f"IR version {model.ir_version} is newer than inq-onnx knows "
                f"(it knows what IR versions up to {NEWEST_KNOWN_IR} added)")
    uses = newer_uses(model, target)
    if not uses:
        return ""
    more = f" (and {len(uses) - 1} more uses of newer IR versions)" if len(uses) > 1 else ""
    return f"it uses {uses[0]}{more}"


def newer_uses(model: onnx.ModelProto, target: int) -> list[str]:
    """Every use in ``model`` (any graph, function or training graph) of what an IR version
    above ``target`` added, described with where it is."""
    uses = []
    for message, where in messages(model):
        kind = message.DESCRIPTOR.full_name.removeprefix("onnx.")
        for number in numbers_set(message):
            added = FIELDS_ADDED.get((kind, number))
            if added is None:
                uses.append(f"field {number} of {kind}, which this onnx does not know, in {where}")
            elif added[1] > target:
                uses.append(f"{added[0]} (IR version {added[1]}) in {where}")
        dtype = data_type_of(message, kind)
        if dtype > OLDEST_DATA_TYPES:
            name, version = DATA_TYPES_ADDED.get(dtype, (f"data type {dtype}", NEWEST_KNOWN_IR + 1))
            if version > target:
                uses.append(f"{name} (IR version {version}) in {where}")
    return uses


def messages(model: onnx.ModelProto) -> Iterator[tuple[Message, str]]:
    """Every message of ``model``, with the nearest named one around it ("node 'conv1'")."""
    stack: list[tuple[Message, str]] = [(model, "the model")]
    while stack:
        message, where = stack.pop()
        label = NAMED.get(message.DESCRIPTOR.name)
        name = getattr(message, "name", "") if label else ""
        if name:
            where = f"{label} '{name}' of {where}" if label == "attribute" else f"{label} '{name}'"
        yield message, where
        for field in message.DESCRIPTOR.fields:
            if field.message_type is None:
                continue
            if repeated(field):
                stack.extend((child, where) for child in getattr(message, field.name))
            elif message.HasField(field.name):
                stack.append((getattr(message, field.name), where))


def numbers_set(message: Message) -> list[int]:
    """The numbers of the fields in ``FIELDS_ADDED`` that ``message`` sets, and of every field
    the installed onnx does not know."""
    kind = message.DESCRIPTOR.full_name.removeprefix("onnx.")
    known = [number for (owner, number) in FIELDS_ADDED if owner == kind and number in message.DESCRIPTOR.fields_by_number]
    present = [n for n in known if is_set(message, message.DESCRIPTOR.fields_by_number[n])]
    return present + [field.field_number for field in UnknownFieldSet(message)]


def is_set(message: Message, field) -> bool:
    return len(getattr(message, field.name)) > 0 if repeated(field) else message.HasField(field.name)


def repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; ``label`` is gone in 7
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def data_type_of(message: Message, kind: str) -> int:
    """The data type a message names: a tensor's, a type's, or a data-type attribute's."""
    if kind in DATA_TYPE_FIELDS:
        return getattr(message, DATA_TYPE_FIELDS[kind])
    if kind == "AttributeProto" and message.type == onnx.AttributeProto.INT and message.name in DATA_TYPE_ATTRIBUTES:
        return message.i
    return 0
