"""Write a model (no external data) one main-graph initializer at a time, new weights streamed.

Protobuf parses a concatenation of serialized pieces of one message as their merge: repeated
fields append in order, singular fields take the last value. So a model can be written as one
``ModelProto{graph{initializer: [t]}}`` piece per initializer, in the list's order, followed by
the rest of the model (``skeleton``: everything but the main graph's initializers). A new weight
goes from its numpy array to the file behind a few bytes of framing, so neither a serialization
of the whole model nor a second copy of its weights is held in memory; ``onnx.load`` of the file
gives the model with the new weights.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import onnx

GRAPH = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
INITIALIZER = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
LENGTH_DELIMITED = 2  # protobuf wire type of messages and bytes


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_head(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(length)


def initializer_head(header: onnx.TensorProto, data_bytes: int) -> bytes:
    """The bytes before ``data_bytes`` bytes of raw data in the piece of one initializer whose
    other fields are ``header`` (which must hold no raw data itself)."""
    tensor = header.SerializeToString() + field_head(RAW_DATA, data_bytes)
    tensor_length = len(tensor) + data_bytes
    graph = field_head(INITIALIZER, tensor_length) + tensor
    return field_head(GRAPH, len(graph) + data_bytes) + graph


def copy_fields(source, target, skip: str = "") -> None:
    """Every field set in ``source`` but ``skip`` into ``target`` (a message of the same type).
    Field by field, not ``ListFields``, which would copy out the value of ``skip`` too (a
    tensor's raw data)."""
    for descriptor in source.DESCRIPTOR.fields:
        name = descriptor.name
        if name == skip:
            continue
        try:
            present = source.HasField(name)
        except ValueError:  # a repeated field has no presence
            value = getattr(source, name)
            if len(value):
                getattr(target, name).extend(value)
            continue
        if present and descriptor.message_type is not None:
            getattr(target, name).CopyFrom(getattr(source, name))
        elif present:
            setattr(target, name, getattr(source, name))


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the main graph's initializers (a new message; no tensor data copied)."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="initializer")
    return out


class PieceWriter:
    """Writes ``model``'s main-graph initializers to ``file`` in order, with new values for those
    passed to :meth:`write`, then its skeleton (:meth:`finish`). Initializers are flushed as
    they stand up to each new one, so new values must come in list order; one whose data was
    left in the input file (``originals``, ``wire.FileTensors``) is copied from there as it was."""

    def __init__(self, file: BinaryIO, model: onnx.ModelProto, originals=None):
        self.file = file
        self.model = model
        self.originals = originals  # ``wire.FileTensors``: initializers left in the input file's bytes
        self.position = {t.name: i for i, t in enumerate(model.graph.initializer)}
        self.next = 0

    def write(self, header: onnx.TensorProto, data: np.ndarray) -> None:
        """The initializer named ``header.name`` with ``header``'s fields and ``data``'s bytes."""
        blocks = self.begin(header, data.nbytes)
        blocks.write(data)
        blocks.close()

    def begin(self, header: onnx.TensorProto, data_bytes: int) -> "DataBlocks":
        """The initializer named ``header.name`` with ``header``'s fields and ``data_bytes`` bytes
        of raw data, which the caller then writes a block at a time (``DataBlocks``)."""
        index = self.position[header.name]
        if index < self.next:
            raise RuntimeError(f"initializer '{header.name}' was already written: new values must come in list order")
        self.flush(index)
        self.file.write(initializer_head(header, data_bytes))
        self.next = index + 1
        return DataBlocks(self.file, header.name, data_bytes)

    def flush(self, stop: int) -> None:
        """Initializers ``next`` .. ``stop - 1`` as they are in the model."""
        for init in self.model.graph.initializer[self.next:stop]:
            original = self.originals.piece(init.name) if self.originals is not None else None
            if original is not None:  # as it lies in the input file, raw data included
                graph = field_head(INITIALIZER, len(original))
                self.file.write(field_head(GRAPH, len(graph) + len(original)) + graph)
                self.file.write(original)
                continue
            piece = onnx.ModelProto()
            piece.graph.initializer.append(init)
            self.file.write(piece.SerializeToString())
        self.next = max(self.next, stop)

    def finish(self) -> None:
        self.flush(len(self.model.graph.initializer))
        self.file.write(skeleton(self.model).SerializeToString())


class DataBlocks:
    """The raw data of one initializer, in blocks: exactly the bytes its piece's head announced."""

    def __init__(self, file: BinaryIO, name: str, data_bytes: int):
        self.file, self.name, self.left = file, name, data_bytes

    def write(self, block: np.ndarray) -> None:
        flat = memoryview(np.ascontiguousarray(block).reshape(-1)).cast("B")
        if flat.nbytes > self.left:
            raise RuntimeError(f"initializer '{self.name}' got more data than its dims hold")
        self.file.write(flat)
        self.left -= flat.nbytes

    def close(self) -> None:
        if self.left:
            raise RuntimeError(f"initializer '{self.name}' is {self.left} bytes short of its dims")
