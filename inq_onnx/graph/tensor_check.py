"""Every constant tensor of a model holds exactly what its type and dims say.

onnx.checker does not compare a tensor's data with its dims, and numpy then fails deep inside
(``cannot reshape array of size 320 into shape (32,)``) or ONNX Runtime crashes. A damaged or
hand-edited file is refused here, at load, naming the tensor. Pure bookkeeping: no data is
decoded, so it costs nothing on a multi-GB model.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import onnx
from onnx import AttributeProto, TensorProto

from inq_onnx.errors import ModelLoadError

_KNOWN_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
_FOUR_BIT = frozenset(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n))
_COMPLEX = frozenset({TensorProto.COMPLEX64, TensorProto.COMPLEX128})
_ITEMSIZE = {TensorProto.FLOAT: 4, TensorProto.UINT8: 1, TensorProto.INT8: 1, TensorProto.UINT16: 2,
             TensorProto.INT16: 2, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1,
             TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.UINT32: 4, TensorProto.UINT64: 8,
             TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16, TensorProto.BFLOAT16: 2}


def check_tensors(model: onnx.ModelProto, label: str, stored: Callable[[str], int | None] = lambda name: None) -> None:
    """Raise ModelLoadError for the first constant whose type is unknown or whose data does not
    fill its dims exactly. Tensors still stored externally are skipped (not loaded yet).
    ``stored``: the raw data bytes of each main-graph initializer whose data was left in the
    model's file (``wire``), None for the others."""
    for tensor, raw_bytes in iter_tensors(model, stored):
        problem = tensor_problem(tensor, raw_bytes)
        if problem:
            raise ModelLoadError(f"{label}: tensor '{tensor.name}' {problem}",
                                 "re-export the model (the file is damaged or was edited by hand)")


def iter_tensors(model: onnx.ModelProto, stored: Callable[[str], int | None] = lambda name: None,
                 ) -> Iterator[tuple[TensorProto, int | None]]:
    """Initializers and tensor attributes (Constant values...) of every graph, subgraph and
    function, each with its ``stored`` raw data bytes (main-graph initializers only)."""
    todo: list = list(model.functions) + [model.graph]
    main = True
    while todo:
        graph = todo.pop()
        for init in getattr(graph, "initializer", ()):
            yield init, stored(init.name) if main else None
        main = False
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    yield attr.t, None
                elif attr.type == AttributeProto.TENSORS:
                    yield from ((t, None) for t in attr.tensors)
                elif attr.type == AttributeProto.GRAPH:
                    todo.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    todo.extend(attr.graphs)


def tensor_problem(tensor: TensorProto, raw_bytes: int | None = None) -> str | None:
    """What is wrong with ``tensor``'s type, dims or amount of data, or None. ``raw_bytes``: the
    length of raw data held for it outside the message (``wire``)."""
    if tensor.data_type not in _KNOWN_TYPES:
        return f"has an unknown data type ({tensor.data_type})"
    if any(d < 0 for d in tensor.dims):
        return f"has a negative dim {list(tensor.dims)}"
    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    count = math.prod(tensor.dims)
    if raw_bytes is not None or tensor.HasField("raw_data"):
        if tensor.data_type == TensorProto.STRING:
            return "holds strings as raw bytes, which ONNX does not allow"
        have = raw_bytes if raw_bytes is not None else len(tensor.raw_data)
        want, unit = expected_bytes(tensor.data_type, count), "bytes"
    else:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        have, want, unit = len(getattr(tensor, field)), expected_entries(tensor.data_type, count), f"{field} entries"
    if have != want:
        return f"holds {have} {unit} but its type and dims {list(tensor.dims)} need {want}"
    return None


def expected_bytes(data_type: int, count: int) -> int:
    if data_type in _FOUR_BIT:
        return (count + 1) // 2
    return count * _ITEMSIZE.get(data_type, 1)  # the float8 types: one byte


def expected_entries(data_type: int, count: int) -> int:
    if data_type in _FOUR_BIT:
        return (count + 1) // 2
    return 2 * count if data_type in _COMPLEX else count
