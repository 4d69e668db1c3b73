"""How the compact format lays out one graph's weights (written here, read back by ``float_export``).

Per bit-width b, the graph's b-bit weights share one stream of per-weight segments
(``packing.pack_segment``), unpacked by one call and split per weight:

    G.p (uint8; uint16 for 16-bit fields) -> inq_onnx.Unpack{b}[x{m}] -> G.i (int32 field indices),
                                                               G.t (float32 [2^width, m])
    G.i -> Split(segment sizes, in rows of G.i) -> one part per weight

(the field layout, narrow or wide, radix unless a code is a negative zero's, is chosen per group
by ``packing.choose_fields``)

and each weight W gets a short chain ending in W (same name, dtype and shape):

    Gather(G.tK, part) -> Reshape(T.s = shape)                      -> [Cast] -> W   (one n2)
    Gather(G.t, part) -> Reshape(T.s) -> Mul(T.x = 2^n2 per channel) -> [Cast] -> W

where G.tK = Mul(G.t, G.xK = 2^n2) is shared by the group's weights with that n2

(a weight whose last field holds padding codes goes Reshape(-1) -> Slice(0, T.n) first). Few
nodes per weight and one Gather per field keep session creation fast: ONNX Runtime folds them
single-threaded, and its cost grows faster than the node count. G and T are fresh name prefixes.
Group tensors are initializers in the main graph and Constant nodes in subgraphs; a weight's own
tensors take its kind: an initializer weight's shape takes its place in the initializer list, a
Constant weight's nodes take its place in the node list (the last one named as it was, the shape
tensor keeping its tensor name, see ``swap_name``), so ``float_export.decode`` restores the float
model exactly.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inq_onnx.export import decode_op, packing
from inq_onnx.export.sites import Outcome
from inq_onnx.graph.tensors import constant_value_attr

SPLIT_INPUT_OPSET = 13  # Split takes its sizes as an input from opset 13, as an attribute before


class FreshNames:
    """Bases under a prefix no model name uses: inq.0, inq.1, ... (suffixes .p, .s, ... follow)."""

    def __init__(self, taken: set[str]):
        prefix, k = "inq", 0
        while any(name == prefix or name.startswith(prefix + ".") for name in taken):
            k += 1
            prefix = f"inq{k}"
        self.prefix, self.counter = prefix, 0

    def __call__(self) -> str:
        self.counter += 1
        return f"{self.prefix}.{self.counter - 1}"


def tensor(array, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def const_node(name: str, value: onnx.TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=value)


def group_part(members: list[Outcome], bits: int, g: str, opset: int):
    """(group tensors, nodes, per member: its part, field count and table, the field layout) of
    one bit-width.

    Weights with one n2 share a table scaled by 2^n2 (G.tK = G.t · G.xK); per-channel ones use G.t.
    """
    exponents = sorted({int(o.encoded.n2.reshape(-1)[0]) for o in members if o.encoded.uniform})
    negative_zero = any(o.encoded.negative_zero is not None for o in members)
    fields = packing.choose_fields(bits, sum(o.encoded.codes.size for o in members), 1 + len(exponents), negative_zero)
    segments = [packing.pack_segment(o.encoded.stream_codes(), fields) for o in members]
    counts = [packing.segment_indices(s.size, fields) for s in segments]
    rows = [packing.segment_rows(s.size, fields) for s in segments]
    parts = [f"{g}.{k}" for k in range(len(members))]
    tensors = [tensor(np.concatenate(segments), f"{g}.p")]
    m = fields.m
    if any(count * m != o.encoded.codes.size for o, count in zip(members, counts)):  # Slice operands
        tensors += [tensor(np.array([0], np.int64), f"{g}.z"), tensor(np.array([-1], np.int64), f"{g}.f")]
    nodes = [decode_op.unpack_node(fields, f"{g}.p", [f"{g}.i", f"{g}.t"])]
    if opset >= SPLIT_INPUT_OPSET:
        tensors.append(tensor(np.array(rows, np.int64), f"{g}.k"))
        nodes.append(helper.make_node("Split", [f"{g}.i", f"{g}.k"], parts, axis=0))
    else:
        nodes.append(helper.make_node("Split", [f"{g}.i"], parts, axis=0, split=rows))
    for k, n2 in enumerate(exponents):
        tensors.append(tensor(np.ldexp(np.float32(1), np.array([n2], np.int32)).astype(np.float32), f"{g}.x{k}"))
        nodes.append(helper.make_node("Mul", [f"{g}.t", f"{g}.x{k}"], [f"{g}.t{k}"]))
    tables = [f"{g}.t{exponents.index(int(o.encoded.n2.reshape(-1)[0]))}" if o.encoded.uniform else f"{g}.t"
              for o in members]
    return tensors, nodes, [(part, count, table, m) for part, count, table in zip(parts, counts, tables)], fields


def weight_chain(outcome: Outcome, part: str, fields: int, table: str, m: int, g: str, t: str, shape_name: str):
    """([(value name, tensor)] of the weight's own tensors, chain nodes) that rebuild it from its
    part (``fields`` lookups of ``m`` codes)."""
    enc, name = outcome.encoded, outcome.listed.site.name
    tensors = [(f"{t}.s", tensor(np.array(enc.shape, np.int64), shape_name))]
    nodes = [helper.make_node("Gather", [table, part], [f"{t}.v"])]  # axis 0
    source = f"{t}.v"
    if fields * m != enc.codes.size:  # drop the padding codes of the last field
        tensors.append((f"{t}.n", tensor(np.array([enc.codes.size], np.int64), f"{t}.n")))
        nodes += [helper.make_node("Reshape", [source, f"{g}.f"], [f"{t}.l"]),
                  helper.make_node("Slice", [f"{t}.l", f"{g}.z", f"{t}.n"], [f"{t}.c"])]
        source = f"{t}.c"
    steps = [("Reshape", f"{t}.s")]
    if not enc.uniform:
        tensors.append((f"{t}.x", tensor(enc.scale, f"{t}.x")))
        steps.append(("Mul", f"{t}.x"))
    cast = outcome.data_type != onnx.TensorProto.FLOAT
    for k, (op, operand) in enumerate(steps):
        last = k == len(steps) - 1 and not cast
        out = name if last else f"{t}.{op[0].lower()}{k}"
        nodes.append(helper.make_node(op, [source, operand], [out]))
        source = out
    if cast:
        nodes.append(helper.make_node("Cast", [source], [name], to=outcome.data_type))
    return tensors, nodes


def swap_name(tensor_name: str, weight_name: str) -> str:
    """The Constant's tensor name as the shape tensor keeps it: usually it is the weight's own
    name, stored as "" (and a real "" as the weight's name). Its own inverse."""
    return {"": weight_name, weight_name: ""}.get(tensor_name, tensor_name)


def copy_label(source: onnx.NodeProto, target: onnx.NodeProto) -> None:
    """Carry a node's name and doc string over (only those it has: proto2 keeps field presence)."""
    for field in ("name", "doc_string"):
        if source.HasField(field):
            setattr(target, field, getattr(source, field))


def rewrite_graph(graph: onnx.GraphProto, outcomes: list[Outcome], fresh: FreshNames, opset: int,
                  in_subgraph: bool) -> set[packing.Fields]:
    """Replace the encoded weights of one graph (its subgraphs are left to their own call); the
    field layouts its unpack calls use."""
    by_bits: dict[int, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_bits[outcome.listed.bits].append(outcome)
    front, chains, used = [], {}, set()
    for bits, members in by_bits.items():
        g = fresh()
        tensors, nodes, parts, fields = group_part(members, bits, g, opset)
        used.add(fields)
        if in_subgraph:
            front += [const_node(t.name, t) for t in tensors]
        else:
            graph.initializer.extend(tensors)
        front += nodes
        chains.update({(o.listed.site.kind, o.listed.site.name): (o, g, part) for o, part in zip(members, parts)})
    appended = []
    for init in graph.initializer:
        if ("initializer", init.name) in chains:
            outcome, g, (part, fields, table, m) = chains[("initializer", init.name)]
            t = fresh()
            tensors, nodes = weight_chain(outcome, part, fields, table, m, g, t, f"{t}.s")
            init.CopyFrom(tensors[0][1])  # the weight's place in the list
            appended += [value for _, value in tensors[1:]]
            front += nodes
    graph.initializer.extend(appended)
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if constant_value_attr(node) is None or ("constant", node.output[0]) not in chains:
            continue
        outcome, g, (part, fields, table, m) = chains[("constant", node.output[0])]
        t = fresh()
        stored = swap_name(constant_value_attr(node).t.name, node.output[0])
        tensors, nodes = weight_chain(outcome, part, fields, table, m, g, t, stored)
        copy_label(node, nodes[-1])
        replacement = [const_node(out, value) for out, value in tensors] + nodes
        node.CopyFrom(replacement[-1])
        for extra in reversed(replacement[:-1]):
            graph.node.insert(index, extra)
    for extra in reversed(front):
        graph.node.insert(0, extra)
    return used
