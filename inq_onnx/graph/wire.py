"""Read a single-file model without copying its weights: the structure is parsed, the raw data of
the main graph's initializers stays in the file's bytes and is read as numpy views of them.

``onnx.load`` copies every tensor's bytes into protobuf's arena, and each later read of
``raw_data`` copies them once more (upb hands out a new ``bytes`` each time). Here the file is
read once and walked on the protobuf wire format (``ModelProto.graph`` -> ``GraphProto.initializer``
-> ``TensorProto.raw_data``): every other byte of the file is parsed by protobuf as usual, from a
copy of the file without those raw data fields. Each initializer's data is then a read-only
numpy view of the file's bytes, and an initializer left as it was is written out as the very
bytes it was read from (``pieces``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inq_onnx.graph.pieces import GRAPH, INITIALIZER, LENGTH_DELIMITED, RAW_DATA, field_head
from inq_onnx.graph.tensors import TensorSite, to_array

VARINT, FIXED64, FIXED32 = 0, 1, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (protobuf's own parser then says why)."""


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise WireError("a truncated or overlong varint")


def fields(buf: bytes, start: int, end: int):
    """(number, wire type, start of the field, start of its value, end) of each field in
    ``buf[start:end]``, one message's serialization."""
    pos = start
    while pos < end:
        head = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, stop = read_varint(buf, pos, end)
        elif wire == FIXED64:
            stop = pos + 8
        elif wire == FIXED32:
            stop = pos + 4
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end)
            stop = pos + length
        else:  # groups (deprecated) or garbage
            raise WireError(f"wire type {wire}")
        if number == 0 or stop > end:
            raise WireError("a field past the end of its message")
        yield number, wire, head, pos, stop
        pos = stop


@dataclass(frozen=True)
class Stored:
    """Where one main-graph initializer lies in the file: its whole serialization and its raw data."""

    piece: tuple[int, int]
    raw: tuple[int, int]


def split(buf: bytes) -> tuple[bytes, list[Stored | None]]:
    """``buf`` (a serialized ModelProto) without the raw data of its main graph's initializers,
    and for each of those initializers, in order, where it lay (None: it held no raw data)."""
    model, found = bytearray(), []
    for number, wire, head, start, stop in fields(buf, 0, len(buf)):
        if number != GRAPH or wire != LENGTH_DELIMITED:
            model += buf[head:stop]
            continue
        graph = bytearray()
        for g_number, g_wire, g_head, g_start, g_stop in fields(buf, start, stop):
            if g_number != INITIALIZER or g_wire != LENGTH_DELIMITED:
                graph += buf[g_head:g_stop]
                continue
            tensor, raw = bytearray(), None
            for t_number, t_wire, t_head, t_start, t_stop in fields(buf, g_start, g_stop):
                if t_number == RAW_DATA and t_wire == LENGTH_DELIMITED:
                    raw = (t_start, t_stop)  # protobuf keeps the last of a repeated singular field
                else:
                    tensor += buf[t_head:t_stop]
            found.append(Stored((g_start, g_stop), raw) if raw is not None else None)
            graph += field_head(INITIALIZER, len(tensor)) + tensor if raw is not None else buf[g_head:g_stop]
        model += field_head(GRAPH, len(graph)) + graph
    return bytes(model), found


class FileTensors:
    """The raw data of a model's main-graph initializers, left in the bytes of its file."""

    def __init__(self, buf: bytes, model: onnx.ModelProto, found: list[Stored | None]):
        self.buf = buf
        names = [t.name for t in model.graph.initializer]
        if len(names) != len(found):
            raise WireError("the initializers parsed and found on the wire differ")
        self.stored = {name: s for name, s in zip(names, found) if s is not None}
        if len(self.stored) != sum(s is not None for s in found):
            raise WireError("two initializers of the main graph share a name")

    def raw_bytes(self, name: str) -> int | None:
        """How many raw data bytes the initializer ``name`` holds in the file (None: not stored here)."""
        s = self.stored.get(name)
        return None if s is None else s.raw[1] - s.raw[0]

    @property
    def nbytes(self) -> int:
        return sum(s.raw[1] - s.raw[0] for s in self.stored.values())

    def piece(self, name: str) -> memoryview | None:
        """The serialized initializer ``name`` as it lies in the file, or None."""
        s = self.stored.get(name)
        return None if s is None else memoryview(self.buf)[s.piece[0]:s.piece[1]]

    def array(self, proto: onnx.TensorProto) -> np.ndarray:
        """The values of the main-graph initializer ``proto`` (which holds no raw data here): a
        read-only view of the file's bytes (bfloat16, and a big-endian machine, get a copy)."""
        start, stop = self.stored[proto.name].raw
        if proto.data_type == onnx.TensorProto.BFLOAT16 or proto.data_type not in NUMPY_TYPES:
            full = onnx.TensorProto()
            full.CopyFrom(proto)
            full.raw_data = self.buf[start:stop]
            return to_array(full)
        dtype = np.dtype(NUMPY_TYPES[proto.data_type]).newbyteorder("<")
        values = np.frombuffer(self.buf, dtype, (stop - start) // dtype.itemsize, start).reshape(tuple(proto.dims))
        return values if dtype.isnative else values.astype(dtype.newbyteorder("="))

    def values(self, site: TensorSite, proto: onnx.TensorProto) -> np.ndarray:
        """A ``tensors.TensorReader``: the values of the constant ``proto`` found at ``site``."""
        if site.kind == "initializer" and not site.graph_path and proto.name in self.stored:
            return self.array(proto)
        return to_array(proto)

    def restore(self, model: onnx.ModelProto, keep_out: set[str]) -> None:
        """Put the raw data back into ``model``'s main-graph initializers, but those in ``keep_out``."""
        for proto in model.graph.initializer:
            s = self.stored.get(proto.name)
            if s is not None and proto.name not in keep_out:
                proto.raw_data = self.buf[s.raw[0]:s.raw[1]]


NUMPY_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
               onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8,
               onnx.TensorProto.INT16: np.int16, onnx.TensorProto.UINT16: np.uint16,
               onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT32: np.uint32,
               onnx.TensorProto.INT64: np.int64, onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.BOOL: np.bool_}
"""Types whose raw data is numpy's little-endian layout as is (the others take onnx's reader)."""
