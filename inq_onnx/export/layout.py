"""How the compact format lays out one graph's weights (written here, read back by ``float_export``).

ONNX Runtime folds the decode at session creation, single-threaded, node by node, and copies
every folded tensor several times on the way (into the node's frame, out of it, into the graph),
so what the layout minimizes is the passes over weight-sized data, then the nodes. Per bit-width
b the graph's weights are decoded in one of two ways (``plan_groups``):

**Element fields** (streams of 2^20 codes or more, no negative zero's code): each weight its own
stream T.p of fields that are whole uint8 or uint16 elements, m codes each as the digits of one
base-(2^(b-1)+1) number (``packing.element_fields``: 4 codes in 16 bits at 4 b, 3 in 8 at 3 b);
per layout one table call G.t = inq_onnx.Table{b}e{m}() [K^m, m]:

    T.p -> Cast(int32) -> Gather(G.tK, .)                         -> [Cast] -> W   (last axis = m)
    T.p -> Cast(int32) -> Gather(G.tK, .) -> Reshape(T.s = shape) -> [Cast] -> W

T.p is stored in the shape of W's other axes when W's last axis is one field (3x3 kernels at 3
and 5 bits), so the Gather gives W in its shape and no float is copied again.

**Bit-packed fields** (smaller streams, the smallest files): the graph's b-bit weights share one
stream of per-weight segments (``packing.pack_segment``), unpacked by one call and split:

    G.p (uint8; uint16 for 16-bit fields) -> inq_onnx.Unpack{b}[x|r{m}] -> G.i (int32 field
                                              indices), G.t (float32 [rows, m])
    G.i -> Split(segment sizes, in rows of G.i) -> one part per weight
    part -> Gather(G.tK, part) -> Reshape(T.s = shape) -> [Cast] -> W

(the field layout, narrow or wide, radix unless a code is a negative zero's, by
``packing.choose_fields``). Either way G.tK = Mul(G.t, G.xK = 2^n2) is shared by the weights
with that n2; a per-channel weight gathers from G.t and gets Mul(T.x = 2^n2 per channel) after
its Reshape; a weight whose fields hold padding codes goes Reshape(-1) -> Slice(0, T.n) before
its Reshape (element layouts are chosen so that this is rare). G and T are fresh name prefixes.
Group tensors are initializers in the main graph and Constant nodes in subgraphs; a weight's own
tensors take its kind: an initializer weight's first own tensor (T.p, else T.s) takes its place
in the initializer list, a Constant weight's nodes take its place in the node list (the last one
named as it was, that first tensor keeping its tensor name, see ``swap_name``), so
``float_export.decode`` restores the float model exactly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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


ELEMENT_MIN_CODES = 1 << 20
"""From this many codes of one bit-width in a graph on, element fields (``packing.element_fields``):
a Cast decodes them, where fields across bytes cost several passes over the stream at session
creation; below it the bit-packed fields of ``packing.choose_fields``, a little smaller."""


def exponents_of(members: list[Outcome]) -> list[int]:
    return sorted({int(o.encoded.n2.reshape(-1)[0]) for o in members if o.encoded.uniform})


def codes_of(members: list[Outcome]) -> int:
    return sum(o.encoded.codes.size for o in members)


def shaped(outcome: Outcome, fields: packing.Fields) -> bool:
    """Whether a weight's last axis is one field: one Gather of its indices gives its shape."""
    shape = outcome.encoded.shape
    return fields.element and len(shape) >= 2 and shape[-1] == fields.m


def plan_groups(members: list[Outcome], bits: int) -> list[tuple[packing.Fields, list[Outcome]]]:
    """The unpack calls of one bit-width: (field layout, its weights) each.

    Big streams: each weight its element layout, one call per layout. ONNX Runtime copies every
    folded tensor several times at session creation, so what counts is the passes over weights
    and streams: a Cast to read the fields, one Gather per weight, and a Reshape (or Slice) of
    floats only where the weight's shape asks for it. Small ones, or a stream holding a negative
    zero's code: one call of ``packing.choose_fields``' layout (bit-packed, a little smaller).
    """
    negative_zero = any(o.encoded.negative_zero is not None for o in members)
    count, tables = codes_of(members), 1 + len(exponents_of(members))
    layouts = packing.element_layouts(bits, count, tables) if count >= ELEMENT_MIN_CODES and not negative_zero else []
    if not layouts:
        return [(packing.choose_fields(bits, count, tables, negative_zero), members)]
    while True:  # a layout whose own weights do not pay for its tables goes, its weights take another
        groups: dict[packing.Fields, list[Outcome]] = defaultdict(list)
        for outcome in members:
            groups[packing.element_fields(layouts, outcome.encoded.shape)].append(outcome)
        poor = [f for f, group in groups.items()
                if f.rows * f.m * (1 + len(exponents_of(group))) * packing.TABLE_SHARE > codes_of(group)]
        if not poor or len(poor) == len(layouts):
            return sorted(groups.items(), key=lambda item: item[0].m)
        layouts = [f for f in layouts if f not in poor]


def needs_cut(outcome: Outcome, fields: packing.Fields) -> bool:
    """Whether a weight's part holds padding (codes of its last field, or fields of its last group)
    that its chain must slice off."""
    count = outcome.encoded.codes.size
    return packing.padded_fields(count, fields) * fields.m != count


@dataclass(frozen=True)
class Part:
    """Where one weight's chain starts, and the table it gathers from: its part of the group's
    indices (bit-packed fields) or its own stream (element fields)."""

    fields: packing.Fields
    group: str
    table: str
    indices: str | None = None
    stream: np.ndarray | None = None


def group_part(members: list[Outcome], fields: packing.Fields, g: str, opset: int):
    """(group tensors, nodes, per member its Part) of one unpack (or table) call.

    Weights with one n2 share a table scaled by 2^n2 (G.tK = G.t · G.xK); per-channel ones use G.t.
    """
    exponents = exponents_of(members)
    segments = [packing.pack_segment(o.encoded.stream_codes(), fields) for o in members]
    tables = [f"{g}.t{exponents.index(int(o.encoded.n2.reshape(-1)[0]))}" if o.encoded.uniform else f"{g}.t"
              for o in members]
    tensors, scaling = [], []
    if any(needs_cut(o, fields) for o in members):  # Slice operands
        tensors += [tensor(np.array([0], np.int64), f"{g}.z"), tensor(np.array([-1], np.int64), f"{g}.f")]
    for k, n2 in enumerate(exponents):
        tensors.append(tensor(np.ldexp(np.float32(1), np.array([n2], np.int32)).astype(np.float32), f"{g}.x{k}"))
        scaling.append(helper.make_node("Mul", [f"{g}.t", f"{g}.x{k}"], [f"{g}.t{k}"]))
    if fields.element:
        nodes = [decode_op.table_node(fields, f"{g}.t")] + scaling
        parts = [Part(fields, g, table, stream=s) for table, s in zip(tables, segments)]
    else:
        rows = [packing.segment_rows(s.size, fields) for s in segments]
        names = [f"{g}.{k}" for k in range(len(members))]
        tensors.insert(0, tensor(np.concatenate(segments), f"{g}.p"))
        nodes = [decode_op.unpack_node(fields, f"{g}.p", [f"{g}.i", f"{g}.t"])]
        nodes += split_node(f"{g}.i", rows, names, f"{g}.k", opset, tensors) + scaling
        parts = [Part(fields, g, table, indices=name) for table, name in zip(tables, names)]
    return tensors, nodes, parts


def split_node(source: str, sizes: list[int], outputs: list[str], sizes_name: str, opset: int,
               tensors: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Split ``source`` along axis 0 in ``sizes`` (an input from opset 13, an attribute before)."""
    if opset >= SPLIT_INPUT_OPSET:
        tensors.append(tensor(np.array(sizes, np.int64), sizes_name))
        return [helper.make_node("Split", [source, sizes_name], outputs, axis=0)]
    return [helper.make_node("Split", [source], outputs, axis=0, split=sizes)]


def weight_chain(outcome: Outcome, part: Part, t: str, placeholder: str | None):
    """([(value name, tensor)] of the weight's own tensors, chain nodes) that rebuild it; the first
    tensor takes the weight's place (a Constant weight's keeps its tensor name, ``placeholder``).

    Element fields: its stream T.p (in the shape of its other axes when its last axis is one
    field) -> Cast to int32 -> Gather, which then gives the weight in its shape, else Reshape.
    Bit-packed fields: its part of the group's indices -> Gather -> Reshape. Where its last field
    or group holds padding, the floats are flattened and sliced before the Reshape.
    """
    enc, name, fields = outcome.encoded, outcome.listed.site.name, part.fields
    direct = part.stream is not None and shaped(outcome, fields)
    owned = [(f"{t}.s", np.array(enc.shape, np.int64))] if not direct else []
    nodes, steps = [], [("Gather", [part.table])]
    if part.stream is not None:
        owned.insert(0, (f"{t}.p", part.stream.reshape(enc.shape[:-1]) if direct else part.stream))
        nodes.append(helper.make_node("Cast", [f"{t}.p"], [f"{t}.i"], to=onnx.TensorProto.INT32))
        source = f"{t}.i"
    else:
        source = part.indices
    if needs_cut(outcome, fields):  # only its own codes: flatten, slice
        owned.append((f"{t}.n", np.array([enc.codes.size], np.int64)))
        steps += [("Reshape", [f"{part.group}.f"]), ("Slice", [f"{part.group}.z", f"{t}.n"])]
    if not direct:
        steps.append(("Reshape", [f"{t}.s"]))
    if not enc.uniform:
        owned.append((f"{t}.x", enc.scale))
        steps.append(("Mul", [f"{t}.x"]))
    cast = outcome.data_type != onnx.TensorProto.FLOAT
    for k, (op, operands) in enumerate(steps):
        out = name if k == len(steps) - 1 and not cast else f"{t}.{k}"
        nodes.append(helper.make_node(op, operands + [source] if op == "Gather" else [source] + operands, [out]))
        source = out
    if cast:
        nodes.append(helper.make_node("Cast", [source], [name], to=outcome.data_type))
    tensors = [(value_name, tensor(values, placeholder if k == 0 and placeholder is not None else value_name))
               for k, (value_name, values) in enumerate(owned)]
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
    for bits, all_members in by_bits.items():
        for fields, members in plan_groups(all_members, bits):
            g = fresh()
            tensors, nodes, parts = group_part(members, fields, g, opset)
            used.add(fields)
            if in_subgraph:
                front += [const_node(t.name, t) for t in tensors]
            else:
                graph.initializer.extend(tensors)
            front += nodes
            chains.update({(o.listed.site.kind, o.listed.site.name): (o, part) for o, part in zip(members, parts)})
    appended = []
    for init in graph.initializer:
        if ("initializer", init.name) in chains:
            outcome, part = chains[("initializer", init.name)]
            t = fresh()
            tensors, nodes = weight_chain(outcome, part, t, None)
            init.CopyFrom(tensors[0][1])  # the weight's place in the list
            appended += [value for _, value in tensors[1:]]
            front += nodes
    graph.initializer.extend(appended)
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if constant_value_attr(node) is None or ("constant", node.output[0]) not in chains:
            continue
        outcome, part = chains[("constant", node.output[0])]
        t = fresh()
        stored = swap_name(constant_value_attr(node).t.name, node.output[0])
        tensors, nodes = weight_chain(outcome, part, t, stored)
        copy_label(node, nodes[-1])
        replacement = [const_node(out, value) for out, value in tensors] + nodes
        node.CopyFrom(replacement[-1])
        for extra in reversed(replacement[:-1]):
            graph.node.insert(index, extra)
    for extra in reversed(front):
        graph.node.insert(0, extra)
    return used
