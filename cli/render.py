"""Human-readable output of the commands."""

from __future__ import annotations

import click

from inq_onnx.report import bias_summary, feedback_summary, quantized_table, range_choice_summary, skipped_summary

AGREEMENT_OK = 0.99


def megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def print_quantize_job(job, verbose: bool = False) -> None:
    result = job.result
    bits = result.options.bits
    q, s = result.quantized, result.skipped
    params = sum(t.size for t in q)
    click.echo(quantized_table(result))
    click.echo(f"\nquantized {len(q)} tensors ({params:,} weights) to {bits} bits; skipped {len(s)}:")
    if s:
        click.echo(skipped_summary(result, verbose))
    if result.range_choice is not None:
        click.echo(range_choice_summary(result.range_choice) + " (the --val samples)")
    if result.feedback is not None:
        click.echo(feedback_summary(result.feedback) + " (the --val samples)")
    if result.bias_correction is not None:
        click.echo(bias_summary(result.bias_correction) + " (the --val samples)")
    compact = job.output_bytes < 0.8 * job.input_bytes
    click.echo(f"\nwrote {job.output}  ({megabytes(job.input_bytes)} -> {megabytes(job.output_bytes)}"
               + (")" if compact else "; the weights are still stored as floats: --compact or "
                  "`inq-onnx export --format compact` stores b bits each)"))
    if job.verification is None:
        click.echo("verification skipped (--no-verify)")
        return
    v = job.verification
    ran = ran_text(v) if v.run_shapes else \
        ("the float model rejects random inputs, so the ONNX Runtime run was skipped (give --val samples, "
         "or --pin an input such as a sample rate)")
    click.echo(f"verified: onnx.checker ok, {v.checked_tensors} tensors in their codebook, {ran}")
    if v.fidelity:
        print_fidelity(v.fidelity)


def ran_text(v) -> str:
    return f"ONNX Runtime ran it on {'the first samples' if v.ran_on_samples else 'random inputs'} {v.run_shapes}"


def print_fidelity(f) -> None:
    parts = [f"on {f.samples} samples:"]
    if f.top1_agreement is not None:
        parts.append(f"top-1 agreement with the float model {f.top1_agreement:.3f},")
    parts.append(f"output SQNR {f.sqnr_db:.1f} dB")
    if f.accuracy_float is not None:
        parts[-1] += f"; accuracy float {f.accuracy_float:.3f} -> quantized {f.accuracy_quantized:.3f}"
    click.echo("fidelity " + " ".join(parts))
    lost = (f.top1_agreement is not None and f.top1_agreement < AGREEMENT_OK) or \
        (f.accuracy_float is not None and f.accuracy_quantized < f.accuracy_float - 0.01)
    if lost:
        click.echo("one-shot rounding lost accuracy: retrain with full INQ "
                   "(`inq-onnx quantize MODEL --bits B --data train.npz`) to recover it")


def summary_table(records: list[dict]) -> str:
    from inq_onnx.report import format_table

    rows = []
    for r in records:
        rows.append(["float" if r["step"] < 0 else str(r["step"] + 1), f"{r['sigma']:g}", f"{r.get('quantized', 0):.3f}",
                     lr_cell(r),
                     "-" if r.get("train_loss") is None else f"{r['train_loss']:.4g}",
                     "-" if r.get("val_accuracy") is None else f"{r['val_accuracy']:.4f}",
                     "-" if r.get("agreement") is None else f"{r['agreement']:.4f}",
                     "-" if r.get("sqnr_db") is None else f"{r['sqnr_db']:.1f}", f"{r.get('seconds', 0):.1f}"])
    return format_table(rows, ["step", "sigma", "quantized", "lr", "train loss", "val acc", "agreement", "SQNR dB",
                               "seconds"])


def lr_cell(r: dict) -> str:
    """The rate the step started with, and the one kept when the guard retried it."""
    if r.get("lr") is None:
        return "-"
    text = (f"{r['optimizer']} " if r.get("optimizer") == "adamw" else "") + f"{r['lr']:.3g}"
    if r.get("tries"):
        kept = r.get("kept")
        text += " -> " + ("start" if kept is None else f"{r['tries'][kept]['lr']:.3g}") + f" ({len(r['tries'])} tries)"
    return text


def run_notes(records: list[dict]) -> list[str]:
    """What a reader of the table needs besides it: how the n1 rules and the rate were chosen,
    what the validation figures are on, and whether retraining ended below one-shot rounding."""
    from inq_onnx.train.evaluate import below_one_shot
    from inq_onnx_cli.progress import describe_search

    from inq_onnx.range_choice import RangeChoice

    notes = []
    float_record = next((r for r in records if r["step"] < 0), None)
    if float_record and float_record.get("val_source"):
        count = float_record.get("val_samples", "?")
        notes.append(f"validation figures on {count} samples ({float_record['val_source']})")
    if float_record and float_record.get("range_choice"):
        notes.append(range_choice_summary(RangeChoice(rules={}, **float_record["range_choice"])))
    notes += [f"step {r['step'] + 1}: {describe_search(r['lr_search'])}" for r in records if r.get("lr_search")]
    fed = [r["feedback"] for r in records if r.get("feedback")]
    if fed:
        notes.append(f"error feedback rounding at {len(fed)} steps: up to {max(f['weights'] for f in fed)} weights on "
                     f"{fed[-1]['samples']} samples, {sum(f.get('seconds', 0.0) for f in fed):.1f} s in all")
    check = next((r["one_shot_check"] for r in records if r.get("one_shot_check")), None)
    if check:
        notes.append(one_shot_check_note(check))
    verdict = below_one_shot(records)
    if verdict:
        notes.append(verdict)
    return notes


def one_shot_check_note(check: dict) -> str:
    if "skipped" in check:
        return f"not checked against one-shot rounding: {check['skipped']}"
    loss = check["held_out_loss"]
    which = "the retrained model" if check["kept"] == "inq" else "the one-shot model (error feedback, same data)"
    return (f"checked against one-shot rounding with the same data: held-out loss {loss['inq']:.4g} retrained, "
            f"{loss['one_shot']:.4g} one-shot; kept {which}")


def print_inq_job(job) -> None:
    if job.records:
        click.echo(summary_table(job.records))
        for note in run_notes(job.records):
            click.echo(note)
    click.echo(f"\nwrote {job.output} and its mask sidecar {job.sidecar.name}; run log in {job.run_dir}/log.jsonl")
    if job.verification is not None:
        v = job.verification
        click.echo(f"verified: onnx.checker ok, {v.checked_tensors} tensors in their codebook"
                   + (f", {ran_text(v)}" if v.run_shapes else ", the ONNX Runtime run was skipped (the float model "
                      "rejects random inputs and the samples)"))
