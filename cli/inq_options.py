"""The options of incremental quantization and retraining, shared by `quantize` and `step`."""

from __future__ import annotations

import click

from inq_onnx.errors import InvalidOptionError
from inq_onnx.partition import PartitionStrategy
from inq_onnx.schedule import parse_schedule
from inq_onnx.train.options import LossChoice, OptimizerChoice, TrainOptions


def schedule_options(command):
    for option in reversed([
        click.option("--schedule", metavar="S1,S2,...,1", help="Accumulated portions sigma [default: the paper's for --bits]."),
        click.option("--partition", type=click.Choice([p.value for p in PartitionStrategy]), default="magnitude",
                     show_default=True, help="Which float weights to quantize next: largest |w| first, random (seeded), or smallest relative rounding error first."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random partition and batch order."),
    ]):
        command = option(command)
    return command


def training_options(command):
    for option in reversed([
        click.option("--epochs-per-step", type=click.IntRange(min=0), help="Retraining epochs per INQ step [default: from the data size, 1-8]."),
        click.option("--lr", type=float, help="Learning rate, restarted at each step, cosine decay [default: chosen per model from short trials on held-out samples]."),
        click.option("--batch-size", type=click.IntRange(min=1),
                     help="Samples per update [default: 32, or a tenth of the samples (at least 4) below 320]."),
        click.option("--optimizer", type=click.Choice([o.value for o in OptimizerChoice]), default="auto", show_default=True,
                     help="sgd: the paper's (momentum 0.9, weight decay 5e-4); auto: SGD or AdamW, found with the "
                          "learning rate by the same short trials (SGD when --lr is given)."),
        click.option("--weight-decay", type=float, default=5e-4, show_default=True),
        click.option("--loss", type=click.Choice([c.value for c in LossChoice]), default="auto", show_default=True,
                     help="auto: cross-entropy with labels, else distillation from the float model (no labels needed)."),
        click.option("--loss-output", metavar="NAME", help="The model output the loss is put on [default: the first float one]."),
        click.option("--distill-tensors", metavar="auto|outputs|none|NAME,...",
                     help="Tensors distillation matches to the float model: outputs (every float output), auto "
                          "(+ a few block outputs), none (the loss output only), or the outputs + NAMEs "
                          "[default: outputs for distillation, none with labels]."),
        click.option("--mixup", type=click.FloatRange(0, 1), metavar="SHARE", default=0.0,
                     help="Distillation: the share of each batch mixed with another sample, x' = l x + (1 - l) x2, "
                          "l uniform, the float model giving the target [default: 0, off]."),
        click.option("--class-axis", type=int, help="Axis of the classes for cross-entropy and KL [default: found from the graph]."),
        click.option("--pin", multiple=True, metavar="INPUT=VALUE[,VALUE...]",
                     help="Fix an input (e.g. sr=16000) so its If branches fold for training; several values "
                          "(sr=16000,8000, or --pin repeated) retrain every branch, each with its own --data."),
        click.option("--teacher", type=click.Path(path_type=str), metavar="MODEL",
                     help="The float model to distil from and validate against [default: MODEL itself]."),
        click.option("--threads", type=click.IntRange(min=0), help="ONNX Runtime threads [default: all cores]."),
        click.option("--provider", default="CPUExecutionProvider", show_default=True, help="ONNX Runtime execution provider."),
        click.option("--run-dir", type=click.Path(file_okay=False), help="Checkpoints and log [default: OUTPUT.inq-run/]."),
        click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True, help="Checkpoint interval within a step."),
    ]):
        command = option(command)
    return command


def parse_pins(pins: tuple[str, ...]) -> dict:
    """``sr=16000`` -> {"sr": 16000}; ``sr=16000,8000`` or ``sr=16000`` ``sr=8000`` -> {"sr": [16000, 8000]}."""
    parsed: dict[str, list] = {}
    for pin in pins:
        name, sep, values = pin.partition("=")
        try:
            numbers = [float(v) if "." in v else int(v) for v in values.split(",")]
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InvalidOptionError(f"--pin '{pin}' is not INPUT=NUMBER[,NUMBER...]",
                                     "write it as e.g. --pin sr=16000, or --pin sr=16000,8000 for both branches")
        parsed.setdefault(name, []).extend(v for v in numbers if v not in parsed.get(name, []))
    return {name: values[0] if len(values) == 1 else values for name, values in parsed.items()}


def parse_schedule_option(text: str | None) -> tuple[float, ...]:
    return parse_schedule(text) if text else ()


def train_options(kw: dict) -> TrainOptions:
    return TrainOptions(epochs_per_step=kw["epochs_per_step"], lr=kw["lr"], optimizer=kw["optimizer"],
                        weight_decay=kw["weight_decay"], batch_size=kw["batch_size"], loss=kw["loss"],
                        loss_output=kw["loss_output"], distill_tensors=kw["distill_tensors"],
                        class_axis=kw["class_axis"], mixup=kw["mixup"], pins=parse_pins(kw["pin"]), threads=kw["threads"],
                        provider=kw["provider"], checkpoint_minutes=kw["checkpoint_minutes"])
