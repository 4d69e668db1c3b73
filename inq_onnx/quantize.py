"""One-shot quantization: select the weights, round each to its codebook, write it back.

This is INQ with a single step sigma = 1 and no retraining. The quantized model says in its
``metadata_props`` which tensors are on which codebook, so export and verify need nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx

from inq_onnx import __version__, codebook
from inq_onnx.bias_correction import BiasCorrection, applies
from inq_onnx.codebook_range import RangeRule, make_codebook_by, resolve_rule
from inq_onnx.data import Samples
from inq_onnx.feedback import Rounding
from inq_onnx.graph.io import load_model
from inq_onnx.graph.passes import copy_model
from inq_onnx.graph.tensors import TensorReader, TensorSite, proto_values, tensor_proto, write_tensor
from inq_onnx.graph.weights import Candidate, select_weights
from inq_onnx.options import QuantizeOptions
from inq_onnx.report import QuantizeResult, RoundingSums, TensorReport, skipped_report, tensor_report

if TYPE_CHECKING:
    from inq_onnx.calibration import BiasReport
    from inq_onnx.compensation import FeedbackRounder
    from inq_onnx.graph.io import InitializerBlocks

METADATA_KEY = "inq_onnx.quantized"
"""Values rounded at once: the codebook's float64 temporaries stay ~100 MB for any tensor size."""
TensorWriter = Callable[[onnx.ModelProto, TensorSite, np.ndarray], None]
BlockWriter = Callable[[onnx.ModelProto, TensorSite, np.dtype], "InitializerBlocks | None"]


def quantize(model: onnx.ModelProto | str | os.PathLike, *, bits: int = 4, per_channel: bool = False,
             include=(), exclude=(), min_size: int = 0, range: RangeRule | str = RangeRule.AUTO) -> QuantizeResult:
    """Round every weight of ``model`` to the INQ codebook for ``bits`` (one shot, no data).

    ``model`` is an in-memory ``onnx.ModelProto`` (left untouched) or a path. Returns the new
    model and a per-tensor report (n1, n2, fraction zero, relative L2 error, skip reasons).
    ``range`` picks each codebook's n1: "paper" (from max|W|), "mse" (least rounding error) or
    "auto" (mse at 2 bits and at 3 bits per tensor, else paper: see ``codebook_range``).
    """
    options = QuantizeOptions(bits=bits, per_channel=per_channel, include=tuple(include),
                              exclude=tuple(exclude), min_size=min_size, range=range)
    loaded, source = load_model(model)
    return quantize_model(loaded, options, in_place=source.path is not None)  # a model read here is ours


def quantize_model(model: onnx.ModelProto, options: QuantizeOptions, *, in_place: bool = False,
                   write: TensorWriter = write_tensor, samples: Samples | None = None,
                   pins: dict | None = None, rules: dict[TensorSite, RangeRule] | None = None,
                   read: TensorReader = proto_values, write_blocks: BlockWriter | None = None,
                   new_biases: bool = True) -> QuantizeResult:
    """Quantize a copy of ``model`` (or ``model`` itself when ``in_place``: no second copy of a
    large model); ``write`` puts each new tensor in place (``graph.io.ModelWriter.write_tensor``
    streams it into the output's external data instead). With ``samples`` (and
    ``options.bias_correction``), each layer's bias is corrected for the mean output shift its
    rounding causes, measured on those samples (``calibration``). ``rules``: the n1 rule of each
    weight, fixed (e.g. those a retraining run chose); otherwise ``--range auto`` with samples
    judges them by the outputs. ``read`` gives a constant's values (``wire.FileTensors.values``
    for a model whose weights were left in its file: each is then read once, without a copy);
    ``write_blocks``, where to write new values a block at a time (``quantize_tensor``);
    ``new_biases``: bias correction may give a layer without a bias one (else it is left alone)."""
    out = model if in_place else copy_model(model)
    reports: list[TensorReport] = []
    recorded: dict[str, dict] = {}
    candidates = select_weights(out, include=options.include, exclude=options.exclude, min_size=options.min_size,
                                read=read)
    judge = judge_for(out, options, samples, pins)
    choice = choose_by_outputs(out, candidates, options, judge) if rules is None else None
    rules = choice.rules if choice is not None else rules or {}
    cal = None
    paper_range = resolve_rule(options.range, options.bits, options.per_channel) is RangeRule.PAPER
    judged = not isinstance(judge, (str, type(None))) and options.bias_correction is BiasCorrection.AUTO
    if samples is not None and (judged or applies(options.bias_correction, paper_range=paper_range, incremental=False)):
        from inq_onnx.calibration import calibrate

        cal = calibrate(out, [c.site for c in candidates if c.selected], samples, pins=pins, create=new_biases)
    rounder = feedback_for(out, candidates, options, samples, pins)
    for candidate in candidates:
        if not candidate.selected:
            reports.append(skipped_report(candidate))
            continue
        rule = rules.get(candidate.site)
        report = quantize_tensor(out, candidate, options, write, on_rounded=cal.rounded if cal else None, rule=rule,
                                 read=read, write_blocks=write_blocks, rounder=rounder)
        reports.append(report)
        if report.quantized:
            recorded[candidate.name] = {"channel_axes": list(report.channel_axes), "range": report.range_rule}
    bias = correct_biases(cal, out, write, judge if judged else None) if cal else None
    stamp_metadata(out, options, recorded)
    return QuantizeResult(model=out, options=options, tensors=tuple(reports), bias_correction=bias, range_choice=choice,
                          feedback=rounder.summary() if rounder else None)


def feedback_for(model: onnx.ModelProto, candidates: list[Candidate], options: QuantizeOptions,
                 samples: Samples | None, pins: dict | None):
    """With samples and ``--rounding feedback``: each weight's layer inputs measured on the float
    model (``compensation``), for rounding by error feedback."""
    if samples is None or options.rounding is not Rounding.FEEDBACK:
        return None
    from inq_onnx.compensation import feedback_rounder

    return feedback_rounder(model, [c.site for c in candidates if c.selected], samples, pins=pins)


def judge_for(model: onnx.ModelProto, options: QuantizeOptions, samples: Samples | None, pins: dict | None):
    """With samples, what judges n1 rules and bias correction by the outputs (``range_choice``):
    an OutputJudge, or why there is none; None where nothing is to be judged."""
    auto = RangeRule(options.range) is RangeRule.AUTO or options.bias_correction is BiasCorrection.AUTO
    if samples is None or not auto:
        return None
    from inq_onnx.range_choice import output_judge

    return output_judge(model, [(samples, pins or {})])


def choose_by_outputs(model: onnx.ModelProto, candidates: list[Candidate], options: QuantizeOptions, judge):
    """With a judge and ``--range auto``: each weight's n1 rule judged by the outputs."""
    if judge is None or RangeRule(options.range) is not RangeRule.AUTO:
        return None
    from inq_onnx.range_choice import choose_rules

    weights = {c.site: channel_axes_for(c, options) for c in candidates if c.selected}
    return choose_rules(model, weights, options.bits, judge)


def correct_biases(cal, model: onnx.ModelProto, write: TensorWriter, judge) -> "BiasReport":
    """Apply bias correction; with a ``judge``, only if it lowers the output error on its samples
    (on top of n1 rules chosen by the outputs it often does not)."""
    if judge is None:
        return cal.apply(model, write)
    try:
        plain = judge.error(model)
        trial = copy_model(model)
        report = cal.apply(trial)
        corrected = judge.error(trial)
    except Exception:  # noqa: BLE001 - the judge ran this model before; if ORT now fails, correct as without one
        return cal.apply(model, write)
    if corrected < plain:
        return cal.apply(model, write)
    return replace(report, corrected=(), created=(),
                   error=f"it did not lower the output error on {judge.samples} samples ({plain:.3g} -> {corrected:.3g})")


def channel_axes_for(candidate: Candidate, options: QuantizeOptions) -> tuple[int, ...]:
    return (candidate.channel_axes or ()) if options.per_channel else ()


def quantize_tensor(model: onnx.ModelProto, candidate: Candidate, options: QuantizeOptions,
                    write: TensorWriter = write_tensor, on_rounded=None, rule: RangeRule | None = None,
                    read: TensorReader = proto_values, write_blocks: BlockWriter | None = None,
                    rounder: "FeedbackRounder | None" = None) -> TensorReport:
    """Round one weight; ``rule`` overrides the n1 rule that ``options.range`` resolves to.
    ``write_blocks`` (``graph.io.ModelWriter.initializer_blocks``) takes the rounded values a
    block at a time where it can: then no rounded copy of the whole tensor is made. ``rounder``:
    rounds by error feedback the weights whose layer inputs it measured."""
    w = read(candidate.site, tensor_proto(model, candidate.site))
    axes = channel_axes_for(candidate, options)
    rule = rule or resolve_rule(options.range, options.bits, bool(axes))
    try:
        book = make_codebook_by(w, options.bits, axes, rule)
    except ValueError as e:  # all zeros, NaN or Inf: nothing sensible to round
        return skipped_report(candidate, reason=str(e).replace("the tensor ", ""))
    fed = rounder is not None and candidate.site in rounder.grams
    # q - w is exact in float32 with the paper's n1; feedback may move a weight further than a factor 2
    sums = RoundingSums(float32_exact=not fed and RangeRule(rule) is RangeRule.PAPER)
    sink = write_blocks(model, candidate.site, w.dtype) if write_blocks is not None and on_rounded is None \
        and not fed else None
    if sink is not None:
        round_blocks(w, book, sums, sink)
        return tensor_report(candidate, sums, book, rule)
    if fed:
        q = rounder.round_all(candidate.site, w, book)
        sums.add(w, q)
    else:
        q = round_blocks(w, book, sums)
    if on_rounded is not None:
        on_rounded(candidate.site, w, q)
    write(model, candidate.site, q)
    return tensor_report(candidate, sums, book, rule)


def round_blocks(w: np.ndarray, book: codebook.Codebook, sums: RoundingSums | None = None,
                 sink: "InitializerBlocks | None" = None) -> np.ndarray | None:
    """Round ``w`` a cache-sized block at a time, each block added to ``sums`` (if any) while it
    is in the cache; into ``sink`` block by block (then closed; None returned), else into a new
    array."""
    q = np.empty_like(w) if sink is None else None
    scratch = None
    for rows, part, part_book in codebook.blocks(w, book, codebook.CACHE_BLOCK):
        if sink is None:
            out = q[rows]
        else:
            scratch = np.empty(part.size, w.dtype) if scratch is None else scratch  # the first block is the largest
            out = scratch[:part.size].reshape(part.shape)
        zeros = codebook.quantize_into(part, part_book, out)
        if sums is not None:
            sums.add(part, out, zeros)
        if sink is not None:
            sink.write(out)
    if sink is not None:
        sink.close()
    return q


def stamp_metadata(model: onnx.ModelProto, options: QuantizeOptions, tensors: dict[str, dict]) -> None:
    """Record which tool, options and codebooks made this model, replacing older stamps."""
    values = {
        METADATA_KEY: json.dumps({"bits": options.bits, "tensors": tensors}, sort_keys=True),
        "inq_onnx.version": __version__,
        "inq_onnx.options": json.dumps(options.as_dict(), sort_keys=True),
    }
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def quantized_tensors(model: onnx.ModelProto) -> tuple[int, dict[str, dict]] | None:
    """(bits, {name: {"channel_axes": [...], "range": rule}}) as stamped by quantization, or None
    (stamps written before the range rule existed have no "range": their n1 is the paper's)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            return int(data["bits"]), dict(data["tensors"])
    return None
