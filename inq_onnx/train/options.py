"""Retraining options as typed data, with the paper's defaults."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field

from inq_onnx.errors import InvalidOptionError


class LossChoice(str, enum.Enum):
    AUTO = "auto"  # cross-entropy with labels, else distillation (MSE)
    CROSS_ENTROPY = "cross-entropy"
    DISTILL = "distill"  # = distill-mse
    DISTILL_MSE = "distill-mse"
    DISTILL_KL = "distill-kl"


class DistillTensors(str, enum.Enum):
    """Which tensors distillation matches to the float teacher (or give names: the outputs + those)."""

    NONE = "none"  # the loss output only
    OUTPUTS = "outputs"  # every float graph output (a recurrent model's state too)
    AUTO = "auto"  # every float output + a few block outputs spread along the graph


def parse_distill_tensors(value) -> "DistillTensors | tuple[str, ...] | None":
    """None, a DistillTensors value, or tensor names (a tuple, or one comma-separated string)."""
    if value is None or isinstance(value, DistillTensors):
        return value
    if isinstance(value, str):
        if value in {d.value for d in DistillTensors}:
            return DistillTensors(value)
        value = value.split(",")
    names = tuple(n.strip() for n in value if n.strip())
    if not names:
        raise InvalidOptionError("no distillation tensor named", "pass auto, outputs, none or NAME,NAME")
    return names


class OptimizerChoice(str, enum.Enum):
    AUTO = "auto"  # found by the learning-rate trials, with the rate: SGD or AdamW (train/lr_search.py)
    SGD = "sgd"  # the paper's: momentum 0.9, weight decay 5e-4
    ADAMW = "adamw"


@dataclass(frozen=True)
class TrainOptions:
    epochs_per_step: int | None = None  # None: from the data size (see epochs_for)
    lr: float | None = None  # None: chosen per model by short trials (train/lr_search.py)
    optimizer: OptimizerChoice = OptimizerChoice.AUTO
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int | None = None  # None: from the data size (see batch_for)
    loss: LossChoice = LossChoice.AUTO
    loss_output: str | None = None
    temperature: float = 1.0
    distill_tensors: DistillTensors | tuple[str, ...] | None = None  # None: the default for the loss
    class_axis: int | None = None  # None: found from the graph (see losses.find_class_axis)
    mixup: float = 0.0  # share of each distillation batch mixed with another sample (see mixup_for)
    pins: dict = field(default_factory=dict)
    threads: int | None = None
    provider: str = "CPUExecutionProvider"
    checkpoint_minutes: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", OptimizerChoice(self.optimizer))
        object.__setattr__(self, "loss", LossChoice(self.loss))
        object.__setattr__(self, "distill_tensors", parse_distill_tensors(self.distill_tensors))
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidOptionError(f"batch size must be at least 1, got {self.batch_size}", "pass e.g. --batch-size 32")
        if self.lr is not None and not self.lr > 0:
            raise InvalidOptionError(f"learning rate must be positive, got {self.lr}", "pass e.g. --lr 0.01")
        if self.epochs_per_step is not None and self.epochs_per_step < 0:
            raise InvalidOptionError("epochs per step must be >= 0", "pass e.g. --epochs-per-step 2")
        if not 0 <= self.mixup <= 1:
            raise InvalidOptionError(f"the mixup share must be in [0, 1], got {self.mixup}", "pass e.g. --mixup 0.5")

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimizers the learning-rate search tries, the first being the one ``--lr`` alone
        means (the paper's SGD)."""
        if self.optimizer is OptimizerChoice.AUTO:
            return (OptimizerChoice.SGD.value, OptimizerChoice.ADAMW.value)
        return (self.optimizer.value,)

    def mixup_for(self, distillation: bool) -> float:
        """The share of each batch's samples mixed with another (``feeder.mix``) when the float
        teacher gives the targets; none with labels, whose mixture has no label. Off by default:
        on the zoo it was neutral within noise (320n, silero, vit, cls) except on the PP-OCRv4
        detector, where the learning-rate trials on mixed batches picked 0.01 and the first step
        killed the model (held-out loss 0.80 -> 0.85, flat after; 0.80 -> 0.24 at 0.003 without)."""
        return self.mixup if distillation else 0.0

    def batch_for(self, samples: int) -> int:
        """32, or a tenth of the samples (at least 4) when fewer than 320: a few dozen photos
        still make several batches per epoch. Never more than the samples."""
        size = self.batch_size if self.batch_size is not None else min(32, max(4, samples // 10))
        return max(1, min(size, samples))

    def epochs_for(self, samples: int, batch_size: int | None = None) -> int:
        """About 2,000 updates per INQ step within 1 to 8 epochs (the paper: < 8 at 5 bits), and
        at least 250 updates however small the data (more epochs over few samples)."""
        if self.epochs_per_step is not None:
            return self.epochs_per_step
        batches = max(1, samples // (batch_size or self.batch_for(samples)))
        most = max(8, math.ceil(250 / batches))
        return int(min(most, max(1, round(2000 / batches))))

    def as_dict(self) -> dict:
        data = asdict(self)
        tensors = self.distill_tensors
        data.update(optimizer=self.optimizer.value, loss=self.loss.value,
                    distill_tensors=tensors.value if isinstance(tensors, DistillTensors) else
                    list(tensors) if tensors is not None else None,
                    pins={k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in self.pins.items()})
        data.pop("threads"), data.pop("provider"), data.pop("checkpoint_minutes")  # do not change results
        return data
