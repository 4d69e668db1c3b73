"""What quantization did, per tensor, as typed data; and its rendering as a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from inq_onnx.codebook import Codebook
from inq_onnx.codebook_range import RangeRule

if TYPE_CHECKING:  # only for annotations: report stays free of graph imports at run time
    import onnx

    from inq_onnx.calibration import BiasReport
    from inq_onnx.graph.weights import Candidate
    from inq_onnx.range_choice import RangeChoice
    from inq_onnx.options import QuantizeOptions


@dataclass(frozen=True)
class TensorReport:
    name: str
    shape: tuple[int, ...]
    dtype: str
    uses: tuple[str, ...]
    quantized: bool
    skip_reason: str | None = None
    channel_axes: tuple[int, ...] = ()
    n1: tuple[int, int] | None = None  # (min, max) over channels; equal when per-tensor
    n2: tuple[int, int] | None = None
    range_rule: str | None = None  # the rule that chose n1: "paper" or "mse" (codebook_range.RangeRule)
    fraction_zero: float | None = None
    rel_l2_error: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantizeResult:
    model: "onnx.ModelProto"
    options: "QuantizeOptions"
    tensors: tuple[TensorReport, ...]
    bias_correction: "BiasReport | None" = None  # with samples: which layer biases were corrected
    range_choice: "RangeChoice | None" = None  # with samples and --range auto: n1 rules judged by the outputs
    feedback: dict | None = None  # with samples and --rounding feedback: which weights were rounded so

    @property
    def quantized(self) -> tuple[TensorReport, ...]:
        return tuple(t for t in self.tensors if t.quantized)

    @property
    def skipped(self) -> tuple[TensorReport, ...]:
        return tuple(t for t in self.tensors if not t.quantized)

    def as_dict(self) -> dict:
        bias = self.bias_correction.as_dict() if self.bias_correction else None
        choice = self.range_choice.as_dict() if self.range_choice else None
        return {"options": self.options.as_dict(), "tensors": [t.as_dict() for t in self.tensors],
                "bias_correction": bias, "range_choice": choice, "feedback": self.feedback}


class RoundingSums:
    """What the report needs of a rounding, added up block by block as the rounding goes: the
    value and zero counts, sum w^2 and sum (q - w)^2 in float64. ``float32_exact``: q - w may be
    taken in float32, exactly, as q lies within a factor 2 of w (Sterbenz) or is 0; so it does
    with the paper's n1, which clamps no weight by more than that; other rules may clamp more."""

    def __init__(self, *, float32_exact: bool):
        self.float32_exact = float32_exact
        self.values = self.zeros = 0
        self.norm2 = self.error2 = 0.0

    def add(self, w: np.ndarray, q: np.ndarray, zeros: int | None = None) -> None:
        """Add a block: ``w`` rounded to ``q``; ``zeros``, the count of zeros in ``q`` when the
        rounding already counted them."""
        w, q = np.ravel(w), np.ravel(q)
        if w.dtype != np.float32 or not self.float32_exact:
            w, q = w.astype(np.float64), q.astype(np.float64)
        diff = q - w
        self.norm2 += float(np.einsum("i,i->", w, w, dtype=np.float64))  # not np.dot: no BLAS threads
        self.error2 += float(np.einsum("i,i->", diff, diff, dtype=np.float64))
        self.values += q.size
        self.zeros += q.size - int(np.count_nonzero(q)) if zeros is None else zeros

    @property
    def relative_error(self) -> float:
        """||q - w|| / ||w||."""
        return float(np.sqrt(self.error2)) / float(np.sqrt(self.norm2)) if self.norm2 else 0.0

    @property
    def fraction_zero(self) -> float:
        return self.zeros / self.values if self.values else 0.0


def tensor_report(candidate: "Candidate", sums: RoundingSums, book: Codebook,
                  rule: RangeRule = RangeRule.PAPER) -> TensorReport:
    return TensorReport(
        name=candidate.name, shape=candidate.shape, dtype=candidate.dtype, uses=candidate.uses, quantized=True,
        channel_axes=book.channel_axes, n1=(int(book.n1.min()), int(book.n1.max())),
        n2=(int(book.n2.min()), int(book.n2.max())), range_rule=RangeRule(rule).value,
        fraction_zero=sums.fraction_zero, rel_l2_error=sums.relative_error, notes=candidate.notes)


def skipped_report(candidate: "Candidate", reason: str | None = None) -> TensorReport:
    return TensorReport(name=candidate.name, shape=candidate.shape, dtype=candidate.dtype, uses=candidate.uses,
                        quantized=False, skip_reason=reason or candidate.skip_reason, notes=candidate.notes)


def exponent_range(pair: tuple[int, int] | None) -> str:
    if pair is None:
        return "-"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}..{pair[1]}"


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def quantized_table(result: QuantizeResult) -> str:
    rows = [[t.name, "x".join(map(str, t.shape)) or "scalar", t.dtype, "channel" if t.channel_axes else "tensor",
             exponent_range(t.n1), t.range_rule or "-", exponent_range(t.n2), f"{t.fraction_zero:.3f}",
             f"{t.rel_l2_error:.4f}"] for t in result.quantized]
    return format_table(rows, ["tensor", "shape", "dtype", "codebook", "n1", "n1 rule", "n2", "zero", "rel. L2 err"])


def skipped_summary(result: QuantizeResult, verbose: bool = False) -> str:
    """Skipped tensors grouped by reason (every tensor when verbose)."""
    if verbose:
        return "\n".join(f"  {t.name}: {t.skip_reason}" for t in result.skipped)
    groups: dict[str, list[str]] = {}
    for t in result.skipped:
        key = t.skip_reason.split(" '")[0] if t.skip_reason else "?"
        groups.setdefault(key, []).append(t.name)
    return "\n".join(f"  {len(names):4d} x {reason}  (e.g. {names[0]})" for reason, names in sorted(groups.items(), key=lambda kv: -len(kv[1])))


def bias_summary(report: "BiasReport") -> str:
    """One line (plus skip reasons) on what bias correction did."""
    if report.error:
        return f"bias correction skipped: {report.error}"
    created = f" ({len(report.created)} given a new bias)" if report.created else ""
    line = f"bias correction on {report.samples} samples: {len(report.corrected)} layers corrected{created}"
    if report.skipped:
        line += "; left alone: " + reason_counts(report.skipped)
    return line


def reason_counts(why: dict[str, str]) -> str:
    """``{name: reason}`` as "N x reason; ...", the most frequent first."""
    return "; ".join(f"{n} x {reason}" for reason, n in Counter(why.values()).most_common())


def range_choice_summary(choice: "RangeChoice") -> str:
    """One line on the n1 rules judged by the outputs (``--range auto`` with samples)."""
    if choice.error:
        return f"n1 rules by output error skipped ({choice.error}): the static auto rules stand"
    head = f"n1 rules judged by the outputs on {choice.samples} samples ({choice.runs} trial runs): "
    if choice.kept_static:
        return (head + f"the static rules kept: the best others gave output error {choice.error_chosen:.3g} "
                f"against {choice.error_static:.3g}, less than a halving")
    moved = ", ".join(f"{n} to {r}" for r, n in sorted(Counter(choice.changed.values()).items())) or "none changed"
    return head + f"{moved}; output error {choice.error_static:.3g} -> {choice.error_chosen:.3g}"


def feedback_summary(feedback: dict) -> str:
    """One line on the weights rounded by error feedback (``--rounding feedback`` with samples)."""
    weights, nearest = feedback["weights"], feedback["nearest"]
    line = (f"error feedback rounding on {feedback['samples']} samples: {len(weights)} weights rounded so that "
            f"their layer's output moves least")
    if nearest:
        line += "; to nearest: " + reason_counts(nearest)
    return line
