"""Validation figures after each INQ step, against the float model."""

from __future__ import annotations

import numpy as np
import onnx

from inq_onnx.data import Samples, branch_label
from inq_onnx.verify import fidelity


def evaluate(reference: onnx.ModelProto, model: onnx.ModelProto, val: Samples, pins: dict | None = None) -> dict:
    f = fidelity(reference, model, val, pins=pins or {})
    out = {"val_samples": f.samples, "agreement": f.top1_agreement, "sqnr_db": round(f.sqnr_db, 2) if f.sqnr_db != float("inf") else None}
    if f.accuracy_quantized is not None:
        out.update(val_accuracy=f.accuracy_quantized, float_accuracy=f.accuracy_float)
    return out


def evaluate_branches(reference: onnx.ModelProto, model: onnx.ModelProto, branches: list[tuple[dict, Samples | None]]
                      ) -> dict:
    """Validation figures of every (pins, samples) branch; with several branches, each under its
    label in ``branches`` and their mean at the top level."""
    per = {branch_label(pins): evaluate(reference, model, val, pins) for pins, val in branches if val is not None}
    if len(branches) == 1:
        return next(iter(per.values()), {})
    top = {}
    for key in {k for m in per.values() for k in m}:
        values = [m.get(key) for m in per.values()]
        if all(isinstance(v, (int, float)) for v in values):
            top[key] = round(float(np.mean(values)), 4)
    return {**top, "branches": per} if per else {}


FIGURES = (("val_accuracy", "accuracy", "{:.4f}"), ("agreement", "top-1 agreement with the float model", "{:.4f}"),
           ("sqnr_db", "output SQNR", "{:.1f} dB"))
MIN_SHARE_BELOW = 0.005  # an accuracy or agreement below one-shot by less than this (or 2 samples) is noise
MIN_DB_BELOW = 0.5


def below_one_shot(records: list[dict]) -> str | None:
    """A plain sentence when the run's last validation figure is below the one-shot model's
    (accuracy with labels, else agreement, else SQNR) by more than noise, with what to try;
    None otherwise."""
    first = next((r for r in records if r["step"] < 0), None)
    last = records[-1] if records and records[-1]["step"] >= 0 else None
    if first is None or last is None:
        return None
    for key, name, fmt in FIGURES:
        final, one_shot = last.get(key), first.get(f"one_shot_{key}")
        if final is None or one_shot is None:
            continue
        samples = first.get("val_samples") or 1
        margin = MIN_DB_BELOW if key == "sqnr_db" else max(MIN_SHARE_BELOW, 2 / samples)
        if final >= one_shot - margin:
            return None
        lrs = sorted({r["lr"] for r in records if r.get("lr") is not None})
        used = f" (this run used {', '.join(f'{lr:.3g}' for lr in lrs)})" if lrs else ""
        return (f"full INQ ended BELOW one-shot rounding on the validation set: {name} {fmt.format(final)} against "
                f"{fmt.format(one_shot)} one-shot, on {first.get('val_samples', '?')} samples; the one-shot model "
                f"(the same command without --data) is the better result here. To try: a lower --lr{used}, more "
                f"--epochs-per-step, more training samples, or --per-channel")
    return None
