"""Progress of a retraining run on stderr: a bar per INQ step with the running loss."""

from __future__ import annotations

import click


class Progress:
    """Receives the loop's events (step, batch, record, resumed) and draws them."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.loss = None

    def __call__(self, kind: str, info: dict) -> None:
        if not self.enabled:
            return
        if kind == "resumed":
            branch = f", branch {info['branch']}" if info.get("branch") else ""
            where = (f"after step {info['step'] + 1}" if info["trained"] else
                     f"in step {info['step'] + 1}{branch}, epoch {info['epoch'] + 1}, batch {info['batch'] + 1}")
            click.echo(f"resuming the run from its checkpoint {where}", err=True)
        elif kind == "teacher":
            if info["model_quantized"] and not info["given"]:
                click.echo("note: the model is already quantized (it carries the inq_onnx.quantized stamp) and is "
                           "its own teacher: distillation and validation compare against it, not the float model; "
                           "pass --teacher FLOAT_MODEL to name the float one", err=True)
            elif info["given"] and info["teacher_quantized"]:
                click.echo("note: the --teacher model carries the inq_onnx.quantized stamp: it is not a float model",
                           err=True)
        elif kind == "range_choice":
            click.echo(info["summary"], err=True)
        elif kind == "complete":
            click.echo(f"the run in {info['run_dir']} is already complete: writing its result", err=True)
        elif kind == "step":
            self.close()
            total = info["epochs"] * info["batches"]
            label = f"step {info['step'] + 1} sigma={info['sigma']:g}" + (f" {info['branch']}" if info.get("branch") else "")
            if total:
                self.bar = click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"),
                                             item_show_func=lambda _: f"loss {self.loss:.4g}" if self.loss is not None else "")
                self.bar.__enter__()
        elif kind == "batch" and self.bar is not None:
            self.loss = info["loss"]
            self.bar.update(1)
        elif kind == "lr_search":
            self.close()
            click.echo(describe_search(info), err=True)
        elif kind == "retry":
            self.close()
            click.echo(describe_retry(info), err=True)
        elif kind == "record":
            self.close()
            click.echo(describe_record(info), err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def loss_text(loss) -> str:
    return "diverged" if loss is None else f"{loss:.4g}"


def describe_search(s: dict) -> str:
    mixed = len({t.get("optimizer") for t in s["trials"]}) > 1
    trials = ", ".join((f"{t['optimizer']} " if mixed else "") + f"{t['lr']:.3g}: {loss_text(t['loss'])}"
                       for t in s["trials"])
    how = "checked against a larger rate in" if s.get("kind") == "check" else "chosen from"
    optimizer = f"{s['optimizer']} " if s.get("optimizer") else ""
    runoff = ""
    if s.get("runoff"):
        finals = ", ".join(f"{t['optimizer']} {t['lr']:.3g}: {loss_text(t['loss'])}" for t in s["runoff"])
        runoff = f"; then a run-off of {s['runoff_updates']} updates each: {finals}"
    return (f"{optimizer}learning rate {s['chosen']:.3g}, {how} {len(s['trials'])} trials of {s['updates']} updates "
            f"each (held-out loss per rate: {trials}{runoff}; judged on {s['judged_on']}; {s['seconds']:.1f} s)")


def describe_retry(r: dict) -> str:
    why = ("the training loss became NaN or infinite" if r["outcome"] == "diverged" and r["loss"] is None else
           f"the held-out loss rose from {r['start_loss']:.4g} to {loss_text(r['loss'])}")
    return f"step {r['step'] + 1}: {why} with lr {r['lr']:g}: rolled back, retrying with lr {r['next_lr']:.3g}"


def describe_record(r: dict) -> str:
    head = "float model" if r["step"] < 0 else f"step {r['step'] + 1} (sigma {r['sigma']:g})"
    parts = [head]
    if r.get("lr") is not None:
        parts.append(f"lr {r['lr']:.3g}" + (f", {len(r['tries'])} tries, kept "
                                            + ("none (the step's start was better)" if r.get("kept") is None
                                               else f"lr {r['tries'][r['kept']]['lr']:.3g}") if r.get("tries") else ""))
    if r.get("val_loss") is not None:
        parts.append(f"held-out loss {r['val_loss_start']:.4g} -> {r['val_loss']:.4g}")
    if r.get("train_loss") is not None:
        parts.append(f"train loss {r['train_loss']:.4g}")
    parts += figures(r, r["step"] >= 0)
    if r["step"] < 0:
        one_shot = [f"{name} {r[key]:.4f}" if key != "one_shot_sqnr_db" else f"SQNR {r[key]:.1f} dB"
                    for key, name in (("one_shot_val_accuracy", "val accuracy"), ("one_shot_agreement", "agreement"),
                                      ("one_shot_sqnr_db", "")) if r.get(key) is not None]
        if one_shot:
            parts.append("one-shot: " + ", ".join(one_shot))
        if r.get("val_source"):
            parts.append(f"on {r.get('val_samples', '?')} samples ({r['val_source']})")
    for label, branch in (r.get("branches") or {}).items():  # several pinned branches: each one's own
        if figures(branch, r["step"] >= 0):
            parts.append(f"[{label}: {' '.join(figures(branch, r['step'] >= 0))}]")
    return ", ".join(parts)


def figures(r: dict, trained: bool) -> list[str]:
    parts = []
    if r.get("val_accuracy") is not None:
        parts.append(f"val accuracy {r['val_accuracy']:.4f}")
    if r.get("agreement") is not None and trained:
        parts.append(f"agreement {r['agreement']:.4f}")
    if r.get("sqnr_db") is not None:
        parts.append(f"SQNR {r['sqnr_db']:.1f} dB")
    return parts
