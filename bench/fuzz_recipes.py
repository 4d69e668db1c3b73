"""The damaging mutations of the fuzz (bench/fuzz_mutations.py): broken bytes, broken fields.

Each field mutation takes a ModelProto and a random.Random, changes the model in place and
returns a short description, or None when it found nothing to act on; each byte mutation takes
the file's bytes and returns the mutant bytes with a description. The walking helpers (graphs,
nodes, tensors, weightish, pick) serve bench/fuzz_consistent.py too.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, TensorProto


def graphs(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    found, todo = [], [model.graph] if model.HasField("graph") else []
    while todo:
        g = todo.pop()
        found.append(g)
        for node in g.node:
            for a in node.attribute:
                todo.extend([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs))
    return found


def nodes(model):
    return [(g, n) for g in graphs(model) for n in g.node]


def tensors(model) -> list[TensorProto]:
    """Initializers and Constant node values, anywhere (PaddleOCR keeps weights in Constants)."""
    found = []
    for g in graphs(model):
        found.extend(g.initializer)
        for n in g.node:
            found.extend(a.t for a in n.attribute if a.type == AttributeProto.TENSOR)
    return found


def weightish(model) -> list[TensorProto]:
    """Tensors with at least 2 dims first: those are the weights quantize touches."""
    ts = tensors(model)
    return [t for t in ts if len(t.dims) >= 2] or ts


def pick(rng, items):
    return rng.choice(items) if items else None


def pick_node(model, rng, wanted=lambda n: True):
    """A (graph, node) drawn among the nodes ``wanted`` accepts, anywhere; (None, None) if none."""
    found = [(g, n) for g, n in nodes(model) if wanted(n)]
    return rng.choice(found) if found else (None, None)


def t_dims(model, rng):
    t = pick(rng, weightish(model))
    if t is None or not t.dims:
        return None
    i = rng.randrange(len(t.dims))
    kind, value = rng.choice([("corrupt", lambda d: d + rng.choice([1, -1, 3])), ("zero", lambda d: 0),
                              ("negative", lambda d: -max(d, 1)), ("huge", lambda d: rng.choice([2**31, 2**40, 2**62])),
                              ("double", lambda d: d * 2)])
    t.dims[i] = value(t.dims[i])
    return f"dims {kind}: {t.name}.dims[{i}] = {t.dims[i]}"


def t_rank(model, rng):
    t = pick(rng, weightish(model))
    if t is None:
        return None
    if t.dims and rng.random() < 0.5:
        t.dims.pop()
        return f"rank: dropped the last dim of {t.name}"
    t.dims.append(1)
    return f"rank: appended a dim 1 to {t.name}"


DTYPES = [0, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.STRING,
          TensorProto.BOOL, TensorProto.UINT8, TensorProto.INT32, TensorProto.COMPLEX64, TensorProto.FLOAT8E4M3FN,
          TensorProto.UINT4, 999, -1]


def t_dtype(model, rng):
    t = pick(rng, weightish(model))
    if t is None:
        return None
    t.data_type = rng.choice(DTYPES)
    return f"data_type of {t.name} = {t.data_type} (data unchanged)"


def t_data(model, rng):
    t = pick(rng, weightish(model))
    if t is None:
        return None
    kind = rng.choice(["truncate", "extend", "empty", "both-fields", "nan", "inf", "zeros", "float_data"])
    raw = t.raw_data
    if kind == "truncate" and raw:
        t.raw_data = raw[: rng.randrange(len(raw))]
    elif kind == "extend":
        t.raw_data = raw + bytes(rng.randrange(1, 64))
    elif kind == "empty":
        t.ClearField("raw_data"), t.ClearField("float_data"), t.ClearField("int64_data")
    elif kind == "both-fields":
        t.float_data.extend([1.0, 2.0])
    elif kind == "float_data":
        t.ClearField("raw_data")
        t.float_data.extend([0.5] * rng.randrange(0, 50))
    elif kind in ("nan", "inf", "zeros") and t.data_type == TensorProto.FLOAT and raw:
        word = {"nan": b"\x00\x00\xc0\x7f", "inf": b"\x00\x00\x80\x7f", "zeros": b"\x00\x00\x00\x00"}[kind]
        n = len(raw) // 4
        k = n if kind == "zeros" else rng.randrange(1, n + 1)
        t.raw_data = word * k + raw[4 * k:]
    else:
        return None
    return f"data {kind}: {t.name}"


def t_external(model, rng):
    t = pick(rng, weightish(model))
    if t is None:
        return None
    where = rng.choice(["missing.bin", "../../etc/passwd", "/etc/hostname", "", "sub/../../x.bin"])
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=where)
    if rng.random() < 0.5:
        t.external_data.add(key="length", value=str(rng.choice([-1, 10**12, 4])))
    t.ClearField("raw_data")
    return f"external data of {t.name} at {where!r}"


def t_drop(model, rng):
    candidates = [g for g in graphs(model) if g.initializer]
    g = pick(rng, candidates)
    if g is None:
        return None
    if rng.random() < 0.2:
        n = len(g.initializer)
        del g.initializer[:]
        return f"dropped all {n} initializers of graph {g.name!r}"
    i = rng.randrange(len(g.initializer))
    name = g.initializer[i].name
    del g.initializer[i]
    return f"dropped initializer {name}"


def t_constant_drop(model, rng):
    g, n = pick_node(model, rng, lambda n: n.op_type == "Constant")
    if n is None:
        return None
    if rng.random() < 0.5:
        del n.attribute[:]
        return f"Constant {n.name or n.output[0]} lost its value"
    g.node.remove(n)
    return f"dropped Constant node {n.output[0]}"


def duplicate_name(model, rng):
    kind = rng.choice(["initializer", "node-output", "node-name", "input"])
    g = model.graph
    if kind == "initializer" and len(g.initializer) >= 2:
        a, b = rng.sample(range(len(g.initializer)), 2)
        g.initializer[a].name = g.initializer[b].name
        return f"initializer {a} renamed to {g.initializer[b].name}"
    pairs = list(g.node)
    if kind in ("node-output", "node-name") and len(pairs) >= 2:
        a, b = rng.sample(pairs, 2)
        if kind == "node-output" and a.output and b.output:
            a.output[0] = b.output[0]
            return f"node output duplicated: {b.output[0]}"
        a.name = b.name
        return f"node name duplicated: {b.name}"
    if kind == "input" and g.input:
        g.input.add().CopyFrom(g.input[0])
        return f"graph input {g.input[0].name} listed twice"
    return None


def dangling(model, rng):
    g, n = pick_node(model, rng, lambda n: n.input)
    if n is None:
        return None
    i = rng.randrange(len(n.input))
    old, n.input[i] = n.input[i], rng.choice(["nowhere", "", "x" * 300])
    return f"{n.op_type} {n.name!r} input {i} {old!r} -> {n.input[i]!r}"


def drop_node(model, rng):
    g, n = pick_node(model, rng)
    if n is None:
        return None
    g.node.remove(n)
    return f"dropped node {n.op_type} {n.name!r}"


def swap_nodes(model, rng):
    g = model.graph
    if len(g.node) < 2:
        return None
    a, b = rng.sample(range(len(g.node)), 2)
    na, nb = onnx.NodeProto(), onnx.NodeProto()
    na.CopyFrom(g.node[a]), nb.CopyFrom(g.node[b])
    g.node[a].CopyFrom(nb), g.node[b].CopyFrom(na)
    return f"swapped nodes {a} and {b} (order broken)"


def op_type(model, rng):
    g, n = pick_node(model, rng)
    if n is None:
        return None
    old = n.op_type
    n.op_type = rng.choice(["Conv", "Gemm", "MatMul", "ConvTranspose", "LSTM", "Relu", "NoSuchOp", "", "If", "Einsum"])
    if rng.random() < 0.2:
        n.domain = rng.choice(["com.unknown", "ai.onnx.ml", "com.microsoft"])
    return f"{old} {n.name!r} -> {n.op_type} (domain {n.domain!r})"


def attribute(model, rng):
    g, n = pick_node(model, rng, lambda n: n.attribute)
    if n is None:
        return None
    a = rng.choice(list(n.attribute))
    kind = rng.choice(["type", "ints", "int", "string", "drop", "graph"])
    if kind == "type":
        a.type = rng.choice([t for t in AttributeProto.AttributeType.values() if t != a.type])
    elif kind == "ints":
        a.ClearField("ints")
        a.ints.extend(rng.choice([[0], [-5, -5], [10**6, 10**6], [1] * 9, [2**62]]))
        a.type = AttributeProto.INTS
    elif kind == "int":
        a.i = rng.choice([0, -1, 2**40, 10**6])
        a.type = AttributeProto.INT
    elif kind == "string":
        a.s = b"\xff\xfe not utf8"
        a.type = AttributeProto.STRING
    elif kind == "drop":
        n.attribute.remove(a)
    else:
        a.ClearField("g")
        a.g.name = "empty"
        a.type = AttributeProto.GRAPH
    return f"attribute {a.name} of {n.op_type} {n.name!r}: {kind}"


def value_info(model, rng):
    g = model.graph
    values = list(g.input) + list(g.output)
    v = pick(rng, values)
    if v is None:
        return None
    kind = rng.choice(["dims", "elem", "drop", "no-type"])
    shape = v.type.tensor_type.shape
    if kind == "dims" and shape.dim:
        d = rng.choice(list(shape.dim))
        d.dim_value = rng.choice([0, -1, -7, 2**31, 2**40])
        return f"{v.name} has dim {d.dim_value}"
    if kind == "elem":
        v.type.tensor_type.elem_type = rng.choice([0, TensorProto.STRING, TensorProto.INT64, TensorProto.BOOL,
                                                   TensorProto.FLOAT16, TensorProto.COMPLEX128, 999])
        return f"{v.name} elem_type {v.type.tensor_type.elem_type}"
    if kind == "drop":
        container = g.input if v in g.input else g.output
        container.remove(v)
        return f"graph {'input' if container is g.input else 'output'} {v.name} dropped"
    v.ClearField("type")
    return f"{v.name} has no type"


def graph_level(model, rng):
    kind = rng.choice(["delete", "no-nodes", "no-outputs", "no-inputs", "subgraph"])
    if kind == "delete":
        model.ClearField("graph")
    elif kind == "no-nodes":
        del model.graph.node[:]
    elif kind == "no-outputs":
        del model.graph.output[:]
    elif kind == "no-inputs":
        del model.graph.input[:]
    else:
        subs = [a for _, n in nodes(model) for a in n.attribute if a.type == AttributeProto.GRAPH]
        if not subs:
            return None
        a = rng.choice(subs)
        if rng.random() < 0.5:
            del a.g.node[:]
        else:
            del a.g.output[:]
    return f"graph: {kind}"


def model_level(model, rng):
    kind = rng.choice(["ir", "opset", "no-opset", "two-defaults", "metadata", "functions"])
    if kind == "ir":
        model.ir_version = rng.choice([0, 1, 2, 3, 4, 11, 12, -1, 2**40])
        return f"ir_version {model.ir_version}"
    if kind == "opset":
        model.opset_import[0].version = rng.choice([0, 1, 6, 7, 9, 21, 22, 100, -3])
        return f"opset {model.opset_import[0].version}"
    if kind == "no-opset":
        del model.opset_import[:]
    elif kind == "two-defaults":
        model.opset_import.add(domain="", version=9)
    elif kind == "metadata":
        model.metadata_props.add(key=rng.choice(["inq_onnx.quantized", "inq_onnx.options"]),
                                 value=rng.choice(["not json", "{}", '{"bits": "x", "tensors": 3}', "[1]"]))
    else:
        f = model.functions.add()
        f.name, f.domain = "Broken", "local"
        f.node.add(op_type="Nope", input=["a"], output=["b"])
    return f"model: {kind}"


PROTO_MUTATIONS = [t_dims, t_rank, t_dtype, t_data, t_external, t_drop, t_constant_drop, duplicate_name, dangling,
                   drop_node, swap_nodes, op_type, attribute, value_info, graph_level, model_level]


def b_truncate(data: bytes, rng):
    n = rng.randrange(len(data))
    return data[:n], f"truncated to {n} of {len(data)} bytes"


def b_flip(data: bytes, rng):
    raw = bytearray(data)
    k = rng.choice([1, 2, 8, 32])
    for _ in range(k):
        raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
    return bytes(raw), f"flipped {k} bytes"


def b_head_flip(data: bytes, rng):
    """Flips in the first KB, where the field tags and lengths of the model's header sit."""
    raw = bytearray(data)
    for _ in range(rng.choice([1, 3])):
        raw[rng.randrange(min(1024, len(raw)))] ^= rng.randrange(1, 256)
    return bytes(raw), "flipped header bytes"


def b_zero_span(data: bytes, rng):
    start = rng.randrange(len(data))
    n = rng.choice([4, 64, 4096])
    return data[:start] + bytes(min(n, len(data) - start)) + data[start + n:], f"zeroed {n} bytes at {start}"


def b_insert(data: bytes, rng):
    at = rng.randrange(len(data))
    junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100])))
    return data[:at] + junk + data[at:], f"inserted {len(junk)} bytes at {at}"


def b_append(data: bytes, rng):
    return data + rng.choice([b"\x00" * 10, b"garbage", data[:100], b"\x0a\xff\xff\xff\xff\x0f"]), "appended junk"


BYTE_MUTATIONS = [b_truncate, b_flip, b_head_flip, b_zero_span, b_insert, b_append]
