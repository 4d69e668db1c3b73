"""Graph plumbing shared by the rewrites: attributes, names, scopes, constants, shapes, the per-node pass."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.graph.passes import PassResult, copy_model
from inq_onnx.graph.tensors import all_names, iter_graphs, subgraphs


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node`` (str for strings), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def defined_names(graph: onnx.GraphProto) -> set[str]:
    """Names defined in this scope only: inputs, initializers and node outputs."""
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    names |= {o for n in graph.node for o in n.output if o}
    return names


class NameMaker:
    """Fresh value names that collide with nothing already taken."""

    def __init__(self, taken: set[str]):
        self._taken = set(taken)

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name


class NodeEmitter:
    """Appends a node per call to ``nodes``, its output (and name) a fresh ``<base>/<op>``;
    returns that output, so a formula reads as nested calls: ``add("Div", d, add("Sqrt", v))``."""

    def __init__(self, fresh: NameMaker, base: str, nodes: list):
        self.fresh, self.base, self.nodes = fresh, base, nodes

    def __call__(self, op: str, *inputs: str, **attrs) -> str:
        out = self.fresh(f"{self.base}/{op.lower()}")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out


def rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename every use of ``old`` in ``graph`` and nested graphs, respecting shadowing."""
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        for _, _, sub in subgraphs(node):
            if old not in defined_names(sub):
                rename_uses(sub, old, new)
                for out in sub.output:
                    if out.name == old:
                        out.name = new


def rename_definition(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value defined at the top of ``graph`` (node output), its uses and outputs."""
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for out in list(graph.output) + list(graph.value_info):
        if out.name == old:
            out.name = new
    rename_uses(graph, old, new)


def splice(graph: onnx.GraphProto, replacements: dict[int, list[onnx.NodeProto]]) -> None:
    """Replace node ``i`` by ``replacements[i]`` (in place, keeping topological order)."""
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.extend(replacements.get(i, [node]))
    del graph.node[:]
    graph.node.extend(nodes)


def const_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer or a Constant node's tensor, else None."""
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            t = attr(node, "value")
            return numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else None
    return None


def constant(name: str, value, elem_type: int = onnx.TensorProto.FLOAT) -> onnx.TensorProto:
    """An initializer ``name`` holding ``value`` as ``elem_type``."""
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def value_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple | None]]:
    """``name -> (elem_type, shape)`` from ONNX shape inference on the top-level graph.

    A dim is an int when static, else None; the shape is None when the rank is unknown.
    Shape inference failures leave only the declared inputs, outputs and initializers.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a partial answer is the contract here
        inferred = model
    graph = inferred.graph
    found: dict[str, tuple[int, tuple | None]] = {}
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor = v.type.tensor_type
        shape = None
        if tensor.HasField("shape"):
            dims = tensor.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
        found[v.name] = (tensor.elem_type, shape)
    for t in graph.initializer:
        found[t.name] = (t.data_type, tuple(t.dims))
    return found


def static_shape(types: dict[str, tuple[int, tuple | None]], name: str) -> tuple[int, ...] | None:
    """The fully static shape of ``name``, or None."""
    shape = types.get(name, (0, None))[1]
    if shape is None or any(d is None for d in shape):
        return None
    return shape


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Names read by any node of ``graph`` or its subgraphs, or listed as an output."""
    used = {v.name for v in graph.output}
    for _, g in iter_graphs(graph):
        used |= {i for n in g.node for i in n.input if i}
        if g is not graph:
            used |= {v.name for v in g.output}
    return used


def drop_unused_initializers(graph: onnx.GraphProto, candidates: set[str]) -> list[str]:
    """Remove the top-level initializers among ``candidates`` that nothing reads any more."""
    used = used_names(graph)
    dropped = [t.name for t in graph.initializer if t.name in candidates and t.name not in used]
    keep = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return dropped


NodeRewrite = Callable[[onnx.GraphProto, onnx.NodeProto, dict, NameMaker], tuple[Optional[list[onnx.NodeProto]], str]]


def rewrite_each(
    model: onnx.ModelProto, op_type: str, rewrite: NodeRewrite, *,
    released: Callable[[onnx.NodeProto], Iterable[str]] = lambda node: (),
) -> PassResult:
    """The per-node pass: each top-level ``op_type`` node of the default domain, rewritten in a copy.

    ``rewrite(graph, node, types, fresh)`` returns ``(nodes, note)``: the nodes that replace
    ``node`` (it may add initializers to ``graph``) and a line for the report, or ``(None, why)``
    to leave it alone. The initializers among ``released(node)`` of the replaced nodes are
    dropped once nothing reads them. The input model is returned when nothing was replaced.
    """
    targets = [i for i, n in enumerate(model.graph.node) if n.op_type == op_type and not n.domain]
    if not targets:
        return PassResult(model)
    out = copy_model(model)
    graph = out.graph
    types = value_types(out)
    fresh = NameMaker(all_names(graph))
    replacements, notes, unused = {}, [], set()
    for i in targets:
        node = graph.node[i]
        nodes, note = rewrite(graph, node, types, fresh)
        if nodes is None:
            notes.append(f"{op_type} '{node.name}' left alone: {note}")
            continue
        replacements[i] = nodes
        notes.append(note)
        unused |= set(released(node))
    splice(graph, replacements)
    if unused:
        drop_unused_initializers(graph, unused)
    return PassResult(out if replacements else model, len(replacements), tuple(notes))


def reduce_axes(graph: onnx.GraphProto, node: onnx.NodeProto, rank: int) -> tuple[int, ...] | None:
    """The sorted non-negative axes a Reduce* node reduces, from its attribute or its input.

    None when they are not known statically, or when the node reduces nothing
    (``noop_with_empty_axes``). No axes given means every axis.
    """
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = const_value(graph, node.input[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    if not axes:
        return None if attr(node, "noop_with_empty_axes", 0) else tuple(range(rank))
    if any(not -rank <= a < rank for a in axes):
        return None
    return tuple(sorted({a % rank for a in axes}))


def consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    """Top-level nodes that read ``name`` (directly or from inside a subgraph)."""
    found = []
    for node in graph.node:
        if name in node.input or any(name in used_names(sub) for _, _, sub in subgraphs(node)):
            found.append(node)
    return found
