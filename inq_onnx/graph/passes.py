"""The shape every graph rewrite has: a small, pure, named step.

A pass takes a model and returns a :class:`PassResult` holding a *new* model; it never
mutates its input. ``run_passes`` composes them and keeps what each one did, so a caller
(and the user, through the report) can see which rewrites fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import onnx


@dataclass(frozen=True)
class PassResult:
    model: onnx.ModelProto
    changed: int = 0
    """How many sites the pass rewrote (0: the model is unchanged)."""
    notes: tuple[str, ...] = field(default=())
    """Human-readable lines about what was rewritten, for the report."""


GraphPass = Callable[[onnx.ModelProto], PassResult]


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy, so that a pass can edit freely without touching its input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def run_passes(model: onnx.ModelProto, passes: Sequence[GraphPass]) -> tuple[onnx.ModelProto, list[tuple[str, PassResult]]]:
    """Apply ``passes`` in order; return the final model and each pass's result by name."""
    results = []
    for graph_pass in passes:
        result = graph_pass(model)
        results.append((getattr(graph_pass, "__name__", repr(graph_pass)), result))
        model = result.model
    return model, results
