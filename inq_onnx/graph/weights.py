"""Select the weight tensors of a model, and say for every other float tensor why it is skipped.

A constant is a weight when every path from it ends in a weight input of the table (through
layout-only ops such as Slice/Concat/Transpose, as silero-vad's LSTM weights do). Anything else
it feeds makes it "shared with a non-weight use" and it is left alone, with that reason. A weight
whose values are plainly hand-made (an arange, a DFT basis: see ``inq_onnx.fixed_tensors``) is
skipped too; ``--include`` quantizes it anyway.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from inq_onnx.fixed_tensors import fixed_tensor_reason
from inq_onnx.graph import table
from inq_onnx.graph.tensors import TensorReader, TensorSite, is_float, proto_values
from inq_onnx.graph.uses import GRAPH_OUTPUT, Use, UseIndex, build_use_index, output_key

FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")


@dataclass(frozen=True)
class Terminal:
    """Where a constant's value ends up: a node input it is not passed through, or an output."""

    use: Use | None
    hops: tuple[str, ...]  # layout ops passed on the way

    def slot(self) -> table.WeightSlot | None:
        return None if self.use is None else table.weight_slot(self.use.node, self.use.input_index)


@dataclass(frozen=True)
class Candidate:
    """One float constant of the model and what inq-onnx decided about it."""

    site: TensorSite
    shape: tuple[int, ...]
    dtype: str
    uses: tuple[str, ...]
    channel_axes: tuple[int, ...] | None = None
    skip_reason: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def selected(self) -> bool:
        return self.skip_reason is None


def terminals(index: UseIndex, key, hops: tuple[str, ...] = ()) -> list[Terminal]:
    found: list[Terminal] = []
    for use in index.of(key):
        if use == GRAPH_OUTPUT:
            found.append(Terminal(None, hops))
        elif table.is_layout_data_input(use.node, use.input_index):
            for name in use.node.output:
                found.extend(terminals(index, output_key(use, name), hops + (use.node.op_type,)))
        else:
            found.append(Terminal(use, hops))
    return found


def describe(term: Terminal) -> str:
    via = f" via {'/'.join(dict.fromkeys(term.hops))}" if term.hops else ""
    if term.use is None:
        return f"graph output{via}"
    return f"{term.use.label} input {term.use.input_index}{via}"


def classify(site: TensorSite, proto: onnx.TensorProto, index: UseIndex, read: TensorReader = proto_values) -> Candidate:
    shape = tuple(int(d) for d in proto.dims)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(proto.data_type).name if proto.data_type != onnx.TensorProto.BFLOAT16 else "bfloat16"
    terms = terminals(index, ("site", site))
    base = dict(site=site, shape=shape, dtype=dtype, uses=tuple(describe(t) for t in terms))
    if not site.graph_path and site.name in index.main_inputs:
        return Candidate(**base, skip_reason="also a graph input, so it can be replaced at run time")
    if not terms:
        return Candidate(**base, skip_reason="unused")
    others = [t for t in terms if t.slot() is None]
    if others:
        first = others[0]
        if first.use is None:
            reason = "is (or reaches) a graph output"
        else:
            reason = table.non_weight_reason(first.use.node, first.use.input_index, first.use.label)
        if len(others) < len(terms):
            reason = f"shared with a non-weight use: {reason}"
        return Candidate(**base, skip_reason=reason)
    if not is_float(proto):
        return Candidate(**base, skip_reason=f"not a float tensor ({dtype}): already integer")
    choice = channel_choice(terms, len(shape))
    fixed = fixed_tensor_reason(read(site, proto), choice.get("channel_axes"))
    return Candidate(**base, **choice, skip_reason=fixed)


def channel_choice(terms: Sequence[Terminal], rank: int) -> dict:
    """Per-channel axes when every use agrees on them and no layout op moves the axes."""
    axes = {t.slot().channel_axes(t.use.node, rank) for t in terms}
    if any(t.hops for t in terms):
        return dict(notes=("reaches its op through layout ops: one codebook for the whole tensor",))
    if len(axes) != 1 or None in axes:
        return dict(notes=("no single output-channel axis: one codebook for the whole tensor",))
    return dict(channel_axes=axes.pop())


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def apply_overrides(c: Candidate, include: Sequence[str], exclude: Sequence[str], min_size: int) -> Candidate:
    from dataclasses import replace

    if matches(c.name, exclude):
        return replace(c, skip_reason="excluded by --exclude")
    if c.selected and c.size < min_size:
        return replace(c, skip_reason=f"smaller than --min-size ({c.size} < {min_size} values)")
    hard = c.dtype not in FLOAT_DTYPES or (c.skip_reason or "").startswith("also a graph input")
    if not c.selected and not hard and matches(c.name, include):
        return replace(c, skip_reason=None, notes=c.notes + (f"included by --include (was: {c.skip_reason})",))
    return c


def select_weights(
    model: onnx.ModelProto,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    min_size: int = 0,
    read: TensorReader = proto_values,
) -> list[Candidate]:
    """Every float constant (and every integer one that sits on a weight input), classified;
    ``read`` gives a constant's values (to recognise fixed, hand-made ones)."""
    index = build_use_index(model)
    found = []
    for site, proto in index.sites.items():
        if not is_float(proto) and not any(t.slot() or (t.use and t.use.node.op_type in table.QUANTIZED_OPS)
                                            for t in terminals(index, ("site", site))):
            continue
        found.append(apply_overrides(classify(site, proto, index, read), include, exclude, min_size))
    return found
