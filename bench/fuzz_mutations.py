"""Mutation fuzz: `inq-onnx quantize MODEL --bits 4 -o OUT` on broken variants of real models.

Each case takes a seed model (../shared/models/*.onnx and the fixture), applies one to three
mutations to its bytes or its protobuf fields (truncate, flip bytes, drop initializers, corrupt or
negative or huge dims, a data_type changed without the data, dangling node inputs, no graph,
duplicate names, wrong attribute types...) or changes that keep the file consistent (a weight
reshaped, retyped, given extreme values, moved into a Constant or a sparse initializer, shared
with a graph output; a plausible wrong Conv/Gemm attribute) so that the quantizer, the writer
and the ONNX Runtime check behind them are reached, and runs the command on it (every third
case with --per-channel). A case ends in one of:

    ok         exit 0 (the mutation was harmless, or the tool coped)
    clean      non-zero exit, one stderr line "error: ... To fix this, ...", input untouched,
               nothing left in the output folder
    failure    a traceback, an "internal error" line, several stderr lines, no fix hint, a
               changed input, or a partial output left behind
    crash      the process running the tool died by a signal
    timeout    no answer within --timeout seconds

The figure to keep at zero is failures + crashes + timeouts. Commands run in-process, a batch
per worker (python -c "import inq_onnx_cli.main; main(argv)" costs a second of imports per
case), each worker a child process so a crash is contained and attributed to its case; the
tool's own ONNX Runtime run already happens in a grandchild. Stdout/stderr are captured at the
file-descriptor level, so what C++ code prints counts as it would for a user.

    .venv/bin/python bench/fuzz_mutations.py                    # 1000 cases, all models
    .venv/bin/python bench/fuzz_mutations.py --cases 100 --models mlp_digits.onnx
    .venv/bin/python bench/fuzz_mutations.py --only 417         # replay one case, show its output
    .venv/bin/python bench/fuzz_mutations.py --keep failures/   # write the failing mutants there

A case is fully determined by its number and --seed: --only N rebuilds the same mutant.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import onnx
from onnx import AttributeProto, TensorProto

REPO = Path(__file__).resolve().parents[1]
SEEDS = [REPO.parent / "shared" / "models", REPO / "fixtures"]
MEMORY_LIMIT = 8 << 30  # per worker (and the ORT child it starts): a huge dim must fail, not swap
FIX_HINT = "To fix this"


# ---- mutations ---------------------------------------------------------------------------------
# Each takes a ModelProto (or bytes, for the byte ones) and a random.Random, changes it and
# returns a short description; None when it found nothing to act on.

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
    found = [(g, n) for g, n in nodes(model) if n.op_type == "Constant"]
    if not found:
        return None
    g, n = rng.choice(found)
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
    found = [(g, n) for g, n in nodes(model) if n.input]
    if not found:
        return None
    g, n = rng.choice(found)
    i = rng.randrange(len(n.input))
    old, n.input[i] = n.input[i], rng.choice(["nowhere", "", "x" * 300])
    return f"{n.op_type} {n.name!r} input {i} {old!r} -> {n.input[i]!r}"


def drop_node(model, rng):
    found = nodes(model)
    if not found:
        return None
    g, n = rng.choice(found)
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
    found = nodes(model)
    if not found:
        return None
    g, n = rng.choice(found)
    old = n.op_type
    n.op_type = rng.choice(["Conv", "Gemm", "MatMul", "ConvTranspose", "LSTM", "Relu", "NoSuchOp", "", "If", "Einsum"])
    if rng.random() < 0.2:
        n.domain = rng.choice(["com.unknown", "ai.onnx.ml", "com.microsoft"])
    return f"{old} {n.name!r} -> {n.op_type} (domain {n.domain!r})"


def attribute(model, rng):
    found = [(g, n) for g, n in nodes(model) if n.attribute]
    if not found:
        return None
    g, n = rng.choice(found)
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


# -- consistent mutations: the file stays valid protobuf and passes onnx.checker more often, so
#    the quantizer, the writer and the ONNX Runtime check behind them are reached

def float_weight(model, rng):
    ts = [t for t in weightish(model) if t.data_type == TensorProto.FLOAT and len(t.dims) >= 1]
    return pick(rng, ts)


def c_reshape(model, rng):
    """A float weight replaced by random data of another shape (same or other element count)."""
    import numpy as np

    t = float_weight(model, rng)
    if t is None:
        return None
    dims = list(t.dims)
    kind = rng.choice(["flatten", "transpose", "grow", "empty", "scalar", "one", "rank5"])
    if kind == "flatten":
        dims = [int(np.prod(dims))]
    elif kind == "transpose":
        dims = dims[::-1]
    elif kind == "grow":
        dims[0] += rng.choice([1, 2, 5])
    elif kind == "empty":
        dims[0] = 0
    elif kind == "scalar":
        dims = []
    elif kind == "one":
        dims = [1] * len(dims)
    else:
        dims = dims + [1] * (5 - len(dims)) if len(dims) < 5 else dims + [1]
    values = np.random.default_rng(rng.randrange(2**32)).normal(size=dims).astype(np.float32)
    t.CopyFrom(onnx.numpy_helper.from_array(values, t.name))
    return f"{t.name} replaced by {kind} data {dims}"


def c_retype(model, rng):
    """A float weight converted (data and type) to another dtype, consistently."""
    import numpy as np

    t = float_weight(model, rng)
    if t is None:
        return None
    values = onnx.numpy_helper.to_array(t)
    kind = rng.choice(["float16", "float64", "int8", "int64", "bool", "bfloat16", "float8"])
    if kind in ("bfloat16", "float8"):
        dt = TensorProto.BFLOAT16 if kind == "bfloat16" else TensorProto.FLOAT8E4M3FN
        t.CopyFrom(onnx.helper.make_tensor(t.name, dt, values.shape, values.ravel().tolist()))
    else:
        t.CopyFrom(onnx.numpy_helper.from_array(values.astype(kind), t.name))
    return f"{t.name} converted to {kind}"


def c_values(model, rng):
    """A float weight given extreme but valid values."""
    import numpy as np

    t = float_weight(model, rng)
    if t is None:
        return None
    values = onnx.numpy_helper.to_array(t).copy()
    kind = rng.choice(["max", "tiny", "denormal", "negzero", "one-value", "mixed-inf", "constant"])
    flat = values.reshape(-1)
    if kind == "max":
        flat[:] = np.float32(3.4e38) * np.sign(flat + 0.5)
    elif kind == "tiny":
        flat *= np.float32(1e-30)
    elif kind == "denormal":
        flat[:] = np.float32(1e-45)
    elif kind == "negzero":
        flat[:] = -0.0
    elif kind == "one-value" and flat.size:
        flat[:] = 0.0
        flat[rng.randrange(flat.size)] = 1.0
    elif kind == "mixed-inf" and flat.size:
        flat[rng.randrange(flat.size)] = np.inf
    else:
        flat[:] = 0.75
    t.CopyFrom(onnx.numpy_helper.from_array(values, t.name))
    return f"{t.name} values: {kind}"


def c_weight_as_input(model, rng):
    """An initializer also listed as a graph input (overridable at run time)."""
    g = model.graph
    t = pick(rng, [t for t in g.initializer if len(t.dims) >= 2])
    if t is None:
        return None
    g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return f"{t.name} is also a graph input"


def c_shared_weight(model, rng):
    """A weight wired into a second, non-weight use (an extra graph output, or an Identity)."""
    g = model.graph
    t = pick(rng, [t for t in g.initializer if len(t.dims) >= 2])
    if t is None:
        return None
    out = f"{t.name}_copy"
    g.node.append(onnx.helper.make_node(rng.choice(["Identity", "Neg", "Transpose"]), [t.name], [out]))
    g.output.append(onnx.helper.make_tensor_value_info(out, t.data_type, None))
    return f"{t.name} also feeds a graph output"


def c_to_constant(model, rng):
    """An initializer moved into a Constant node (as PaddleOCR keeps weights), or a sparse one."""
    g = model.graph
    if not g.initializer:
        return None
    i = rng.randrange(len(g.initializer))
    t = onnx.TensorProto()
    t.CopyFrom(g.initializer[i])
    del g.initializer[i]
    if rng.random() < 0.3 and len(t.dims) == 2:
        import numpy as np

        values = onnx.numpy_helper.to_array(t)
        idx = np.flatnonzero(values)
        sparse = onnx.helper.make_sparse_tensor(onnx.numpy_helper.from_array(values.reshape(-1)[idx], t.name),
                                                onnx.numpy_helper.from_array(idx.astype(np.int64), ""), list(t.dims))
        g.sparse_initializer.append(sparse)
        return f"{t.name} became a sparse initializer"
    g.node.insert(0, onnx.helper.make_node("Constant", [], [t.name], value=t))
    return f"{t.name} became a Constant node"


def c_toggle_attr(model, rng):
    """A plausible but wrong attribute: Gemm transB flipped, Conv group / strides / pads changed."""
    found = [n for _, n in nodes(model) if n.op_type in ("Gemm", "Conv", "ConvTranspose", "MatMul", "LSTM")]
    n = pick(rng, found)
    if n is None:
        return None
    if n.op_type == "Gemm":
        name, value = rng.choice(["transA", "transB"]), rng.choice([0, 1])
    elif n.op_type == "LSTM":
        name, value = "hidden_size", rng.choice([1, 7, 1000])
    elif n.op_type == "MatMul":
        n.op_type = "Gemm"
        return f"MatMul {n.name!r} became a Gemm"
    else:
        name = rng.choice(["group", "strides", "pads", "dilations", "kernel_shape"])
        value = {"group": rng.choice([1, 2, 3, 1000]), "strides": [rng.choice([1, 2, 7])] * 2,
                 "pads": [rng.choice([0, 1, 50])] * 4, "dilations": [rng.choice([1, 3, 100])] * 2,
                 "kernel_shape": [rng.choice([1, 3, 9])] * 2}[name]
    kept = [a for a in n.attribute if a.name != name]
    del n.attribute[:]
    n.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])
    return f"{n.op_type} {n.name!r} {name} = {value}"


PROTO_MUTATIONS = [t_dims, t_rank, t_dtype, t_data, t_external, t_drop, t_constant_drop, duplicate_name, dangling,
                   drop_node, swap_nodes, op_type, attribute, value_info, graph_level, model_level]
CONSISTENT_MUTATIONS = [c_reshape, c_retype, c_values, c_weight_as_input, c_shared_weight, c_to_constant, c_toggle_attr]


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


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """One byte mutation (25%), or 1-3 field mutations: damaging ones (45%) or ones that keep
    the model consistent (30%), described."""
    draw = rng.random()
    if draw < 0.25:
        out, what = rng.choice(BYTE_MUTATIONS)(data, rng)
        return out, [what]
    kinds = PROTO_MUTATIONS if draw < 0.7 else CONSISTENT_MUTATIONS
    model = onnx.ModelProto()
    model.ParseFromString(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        for _attempt in range(5):
            what = rng.choice(kinds)(model, rng)
            if what:
                done.append(what)
                break
    return model.SerializeToString(), done or ["nothing changed"]


# ---- the worker: runs cases in-process, reports one JSON line each -----------------------------

@contextlib.contextmanager
def captured_fds(folder: Path):
    """Redirect fd 1 and 2 (and sys.stdout/err) to files; yields a function reading stderr."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out_file, err_file = open(folder / "stdout", "w+b"), open(folder / "stderr", "w+b")
    os.dup2(out_file.fileno(), 1), os.dup2(err_file.fileno(), 2)
    py_out, py_err = sys.stdout, sys.stderr
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
    try:
        yield lambda: (err_file.seek(0), err_file.read().decode(errors="replace"))[1]
    finally:
        sys.stdout.close(), sys.stderr.close()
        sys.stdout, sys.stderr = py_out, py_err
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])
        out_file.close(), err_file.close()


def classify(rc: int, stderr: str, input_ok: bool, leftovers: list[str]) -> str:
    lines = stderr.strip().splitlines()
    if "Traceback" in stderr or "internal error" in stderr:
        return "failure"
    if rc == 0:
        return "ok" if input_ok else "failure"
    clean = (len(lines) == 1 and lines[0].startswith("error: ") and FIX_HINT in lines[0] and input_ok
             and not leftovers)
    return "clean" if clean else "failure"


def seed_models(patterns: list[str] | None) -> list[Path]:
    found = [p for folder in SEEDS if folder.is_dir() for p in sorted(folder.glob("*.onnx"))]
    if patterns:
        found = [p for p in found if any(p.match(pat) for pat in patterns)]
    return found


def build_case(case: dict, cache: dict) -> tuple[bytes, list[str]]:
    path = case["model"]
    if path not in cache:
        cache[path] = Path(path).read_bytes()
    return mutate(cache[path], random.Random(case["rng"]))


def run_case(case: dict, cache: dict, main) -> dict:
    data, recipe = build_case(case, cache)
    with tempfile.TemporaryDirectory(prefix="inq-fuzz-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir(), (tmp / "out").mkdir(), (tmp / "io").mkdir()
        model = tmp / "in" / "model.onnx"
        model.write_bytes(data)
        warnings.resetwarnings()  # each case shows its warnings, as a fresh process would
        warnings.simplefilter("default")
        started = time.monotonic()
        with captured_fds(tmp / "io") as read_stderr:
            try:
                rc = main(["quantize", str(model), "--bits", "4", "-o", str(tmp / "out" / "q.onnx"),
                           *(["--per-channel"] if case.get("per_channel") else [])])
            except SystemExit as e:  # main() returns its code; a SystemExit is a bug of ours too
                rc = e.code if isinstance(e.code, int) else 1
                print(f"SystemExit escaped main(): {e.code!r}", file=sys.stderr)
            stderr = read_stderr()
        seconds = time.monotonic() - started
        input_ok = model.read_bytes() == data and sorted(os.listdir(tmp / "in")) == ["model.onnx"]
        produced = sorted(os.listdir(tmp / "out"))
        leftovers = [p for p in produced if p not in ("q.onnx", "q.onnx.data")] if rc == 0 else produced
    kind = classify(rc, stderr, input_ok, leftovers)
    first = next((line for line in stderr.splitlines() if line.strip()), "")
    if not input_ok:
        first = "the input file was changed | " + first
    if leftovers and kind == "failure":
        first = f"left behind {leftovers} | " + first
    recipe = recipe + ["(--per-channel)"] if case.get("per_channel") else recipe
    return {"id": case["id"], "model": Path(case["model"]).name, "recipe": recipe, "rc": rc, "kind": kind,
            "first_line": first[:300], "stderr_lines": len(stderr.strip().splitlines()), "seconds": round(seconds, 2),
            **({"stderr": stderr[-4000:]} if kind == "failure" or case.get("verbose") else {})}


def worker() -> None:
    """Read cases (JSON lines) on stdin, answer one JSON line each on the original stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    answers = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    from inq_onnx_cli.main import main

    cache: dict = {}
    for line in sys.stdin:
        case = json.loads(line)
        answers.write(json.dumps(run_case(case, cache, main)) + "\n")
        answers.flush()


# ---- the driver --------------------------------------------------------------------------------

class Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=REPO, start_new_session=True)

    def ask(self, case: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        base = {"id": case["id"], "model": Path(case["model"]).name, "rc": None, "recipe": None}
        if not ready:
            self.stop()
            return {**base, "kind": "timeout", "first_line": f"no answer in {timeout:.0f} s"}
        code = self.proc.wait()
        reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"the worker exited with {code}"
        return {**base, "kind": "crash" if code < 0 else "failure", "first_line": reason}

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and the ORT child it may have started
        self.proc.wait()


def drive(cases: list[dict], workers: int, timeout: float, progress: bool) -> list[dict]:
    todo: queue.Queue = queue.Queue()
    for case in cases:
        todo.put(case)
    results, lock = [], threading.Lock()

    def loop() -> None:
        w = Worker()
        try:
            while True:
                try:
                    case = todo.get_nowait()
                except queue.Empty:
                    return
                result = w.ask(case, timeout)
                if result["recipe"] is None:  # the worker is gone: rebuild the recipe here, start another
                    result["recipe"] = build_case(case, {})[1] + (["(--per-channel)"] if case["per_channel"] else [])
                    w = Worker()
                with lock:
                    results.append(result)
                    if progress and len(results) % 50 == 0:
                        print(f"  {len(results)}/{len(cases)} cases", file=sys.stderr, flush=True)
        finally:
            w.stop()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda r: r["id"])


def make_cases(n: int, seed: int, models: list[Path]) -> list[dict]:
    """Round-robin over the seed models; every third case quantizes per channel."""
    rng = random.Random(seed)
    return [{"id": i, "model": str(models[i % len(models)]), "rng": rng.randrange(2**63), "per_channel": i % 3 == 2}
            for i in range(n)]


def summary(results: list[dict], seconds: float) -> str:
    counts = Counter(r["kind"] for r in results)
    lines = [f"{len(results)} cases in {seconds:.0f} s: {counts['ok']} exit 0, {counts['clean']} clean one-line errors, "
             f"{counts['failure']} tracebacks/internal errors/messy output, {counts['crash']} crashes by signal, "
             f"{counts['timeout']} timeouts"]
    per_model = Counter(r["model"] for r in results)
    bad = Counter(r["model"] for r in results if r["kind"] in ("failure", "crash", "timeout"))
    lines.append("per model: " + ", ".join(f"{m} {per_model[m]} ({bad[m]} bad)" for m in sorted(per_model)))
    failing = [r for r in results if r["kind"] in ("failure", "crash", "timeout")]
    if failing:
        lines.append("failing cases (replay with --only ID):")
        lines += [f"  #{r['id']} {r['model']} [{r['kind']}] {'; '.join(r['recipe'] or [])}\n      {r['first_line']}"
                  for r in failing]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", help="seed model file names or globs (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case")
    parser.add_argument("--only", type=int, nargs="+", help="run just these case numbers, printing their stderr")
    parser.add_argument("--keep", type=Path, help="write the mutant of every failing case into this folder")
    parser.add_argument("--json", type=Path, help="write every result into this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    models = seed_models(args.models)
    if not models:
        print("no seed models found (../shared/models/*.onnx, fixtures/*.onnx)", file=sys.stderr)
        return 2
    cases = make_cases(max(args.cases, max(args.only or [0]) + 1), args.seed, models)
    if args.only:
        cases = [dict(cases[i], verbose=True) for i in args.only]
    started = time.monotonic()
    results = drive(cases, min(args.workers, len(cases)), args.timeout, progress=not args.only)
    print(summary(results, time.monotonic() - started))
    if args.only:
        for r in results:
            print(f"--- #{r['id']} stderr:\n{r.get('stderr', '')}")
    failing = [r for r in results if r["kind"] in ("failure", "crash", "timeout")]
    if args.keep and failing:
        args.keep.mkdir(parents=True, exist_ok=True)
        by_id = {c["id"]: c for c in cases}
        for r in failing:
            (args.keep / f"case{r['id']}_{r['model']}").write_bytes(build_case(by_id[r["id"]], {})[0])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
