"""Where constant tensors live in a model, and how to read and write them in place.

A constant is an initializer or a ``Constant`` node with a ``value`` tensor, in the main graph
or in any subgraph (If/Loop/Scan bodies). A :class:`TensorSite` names one precisely: the same
name may be defined in two branches, so the graph path is part of its identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

GraphPath = tuple[tuple[int, str, int], ...]
"""Steps from the main graph: (node index, attribute name, index in a GRAPHS list)."""

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.BFLOAT16: None,  # numpy has no bfloat16: read as float32, written back by hand
}


@dataclass(frozen=True)
class TensorSite:
    name: str
    graph_path: GraphPath
    kind: Literal["initializer", "constant"]

    def describe(self) -> str:
        where = "main graph" if not self.graph_path else f"subgraph at depth {len(self.graph_path)}"
        return f"{self.kind} '{self.name}' ({where})"


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, int, onnx.GraphProto]]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, 0, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for i, g in enumerate(attr.graphs):
                yield attr.name, i, g


def iter_graphs(graph: onnx.GraphProto, path: GraphPath = ()) -> Iterator[tuple[GraphPath, onnx.GraphProto]]:
    """The graph and every nested subgraph, depth first, with their paths."""
    yield path, graph
    for index, node in enumerate(graph.node):
        for attr_name, i, sub in subgraphs(node):
            yield from iter_graphs(sub, path + ((index, attr_name, i),))


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name defined, used or annotated anywhere in ``graph`` and its subgraphs
    (what a fresh name must avoid)."""
    names: set[str] = set()
    for _, g in iter_graphs(graph):
        names.update(v.name for v in (*g.input, *g.output, *g.value_info))
        names.update(t.name for t in g.initializer)
        for node in g.node:
            names.update(n for n in (*node.input, *node.output) if n)
    return names


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports (0 if none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def get_graph(model: onnx.ModelProto, path: GraphPath) -> onnx.GraphProto:
    graph = model.graph
    for node_index, attr_name, i in path:
        attr = next(a for a in graph.node[node_index].attribute if a.name == attr_name)
        graph = attr.g if attr.type == onnx.AttributeProto.GRAPH else attr.graphs[i]
    return graph


def constant_value_attr(node: onnx.NodeProto) -> onnx.AttributeProto | None:
    """The ``value`` tensor attribute of a Constant node, if it has one."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)


def constant_sites(graph: onnx.GraphProto, path: GraphPath = ()) -> Iterator[tuple[TensorSite, onnx.TensorProto]]:
    """Every constant tensor defined directly in ``graph`` (not in its subgraphs)."""
    for init in graph.initializer:
        yield TensorSite(init.name, path, "initializer"), init
    for node in graph.node:
        attr = constant_value_attr(node)
        if attr is not None and node.output:
            yield TensorSite(node.output[0], path, "constant"), attr.t


def tensor_proto(model: onnx.ModelProto, site: TensorSite) -> onnx.TensorProto:
    """The tensor at ``site``: the first of ``constant_sites`` there, looked up by name and kind."""
    graph = get_graph(model, site.graph_path)
    if site.kind == "initializer":
        found = next((init for init in graph.initializer if init.name == site.name), None)
    else:
        found = next((attr.t for node in graph.node if (attr := constant_value_attr(node)) is not None
                      and node.output and node.output[0] == site.name), None)
    if found is None:
        raise KeyError(f"no {site.describe()} in the model")
    return found


def is_float(proto: onnx.TensorProto) -> bool:
    return proto.data_type in FLOAT_TYPES


def to_array(proto: onnx.TensorProto) -> np.ndarray:
    """The tensor as numpy; bfloat16 comes back as float32 (exactly)."""
    if proto.data_type == onnx.TensorProto.BFLOAT16:
        if proto.HasField("raw_data"):
            bits = np.frombuffer(proto.raw_data, dtype=np.uint16).astype(np.uint32)
        else:
            bits = np.asarray(proto.int32_data, dtype=np.uint32)
        return (bits << 16).view(np.float32).reshape(tuple(proto.dims))
    return numpy_helper.to_array(proto)


def from_array(array: np.ndarray, like: onnx.TensorProto) -> onnx.TensorProto:
    """A TensorProto with ``like``'s name and dtype holding ``array`` (values must be exact in it)."""
    if like.data_type == onnx.TensorProto.BFLOAT16:
        u32 = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
        bits = ((u32 + 0x7FFF + ((u32 >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        out = onnx.TensorProto(name=like.name, data_type=like.data_type, dims=like.dims)
        out.raw_data = bits.tobytes()
        return out
    dtype = onnx.helper.tensor_dtype_to_np_dtype(like.data_type)
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), like.name)


def read_tensor(model: onnx.ModelProto, site: TensorSite) -> np.ndarray:
    return to_array(tensor_proto(model, site))


def proto_values(site: TensorSite, proto: onnx.TensorProto) -> np.ndarray:
    """The values of the constant ``proto`` found at ``site``: a ``TensorReader`` for a model
    that holds all its data (``wire.FileTensors.values`` reads one that left it in its file)."""
    return to_array(proto)


TensorReader = Callable[[TensorSite, onnx.TensorProto], np.ndarray]


def write_tensor(model: onnx.ModelProto, site: TensorSite, array: np.ndarray) -> None:
    """Replace the values of ``site`` in place, keeping its name, dtype and shape."""
    proto = tensor_proto(model, site)
    if tuple(array.shape) != tuple(proto.dims):
        raise ValueError(f"shape {array.shape} does not match {site.describe()} {tuple(proto.dims)}")
    proto.CopyFrom(from_array(array, proto))


def tensor_values(proto: onnx.TensorProto, base_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The values of ``proto``; external data is read from ``base_dir`` into a detached copy, so
    ``proto`` stays without its data and memory holds one tensor at a time."""
    if not external_data_helper.uses_external_data(proto):
        return to_array(proto)
    if base_dir is None:
        raise ValueError(f"tensor '{proto.name}' uses external data: give the folder of its model")
    detached = onnx.TensorProto()
    detached.CopyFrom(proto)
    external_data_helper.load_external_data_for_tensor(detached, str(base_dir))
    detached.data_location = onnx.TensorProto.DEFAULT
    del detached.external_data[:]
    return to_array(detached)
