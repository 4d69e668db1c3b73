"""The accumulated portions sigma_1 < ... < sigma_N = 1 of INQ's Algorithm 1, pure python.

sigma_n is the share of a tensor that is quantized after partition step n. The paper's presets
per bit-width are :data:`PAPER_SCHEDULES`; 6 to 8 bits (beyond the paper) reuse the 5-bit one.
The learning rate restarts at each INQ step and decays within it as an :class:`LRSchedule` says.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Iterable

from inq_onnx.codebook import MAX_BITS, MIN_BITS
from inq_onnx.errors import InvalidOptionError

__all__ = [
    "PAPER_SCHEDULES", "default_schedule", "parse_schedule", "check_schedule", "format_schedule",
    "LRDecay", "LRSchedule",
]

Schedule = tuple[float, ...]

PAPER_SCHEDULES: dict[int, Schedule] = {
    5: (0.5, 0.75, 0.875, 1.0),
    4: (0.3, 0.5, 0.8, 0.9, 0.95, 1.0),
    3: (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
    2: (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0),
}

_EXAMPLE = "for example --schedule 0.5,0.75,0.875,1"


def default_schedule(bits: int) -> Schedule:
    """The paper's schedule for ``bits`` (2 to 5); 6 to 8 bits take the 5-bit schedule."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidOptionError(
            f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}",
            f"pass --bits with a value from {MIN_BITS} to {MAX_BITS}",
        )
    return PAPER_SCHEDULES[min(bits, 5)]


def check_schedule(sigmas: Iterable[float]) -> Schedule:
    """Return ``sigmas`` as a tuple of floats, or raise InvalidOptionError saying what is wrong.

    A schedule is non-empty, strictly increasing, every value in (0, 1], the last exactly 1.
    """
    values = tuple(sigmas)
    if not values:
        raise InvalidOptionError("the schedule is empty", f"give at least one portion ending at 1, {_EXAMPLE}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidOptionError(f"the schedule value {value!r} is not a number", f"use decimals, {_EXAMPLE}")
        if not 0.0 < value <= 1.0:
            raise InvalidOptionError(
                f"the schedule value {value!r} is outside (0, 1]", f"use portions above 0 and at most 1, {_EXAMPLE}"
            )
    for before, after in zip(values, values[1:]):
        if not after > before:
            raise InvalidOptionError(
                f"the schedule is not strictly increasing ({before!r} then {after!r})",
                f"list each accumulated portion once, in increasing order, {_EXAMPLE}",
            )
    if values[-1] != 1.0:
        raise InvalidOptionError(
            f"the schedule ends at {values[-1]!r}, not 1",
            f"end it with 1 so that every weight is quantized, {_EXAMPLE}",
        )
    return tuple(float(v) for v in values)


def parse_schedule(text: str) -> Schedule:
    """Parse a comma-separated schedule such as ``"0.5,0.75,0.875,1"`` (spaces allowed)."""
    values = []
    for item in str(text).split(","):
        try:
            values.append(float(item.strip()))
        except ValueError:
            raise InvalidOptionError(
                f"the schedule item {item.strip()!r} in {text!r} is not a number",
                f"use decimals separated by commas, {_EXAMPLE}",
            ) from None
    return check_schedule(values)


def format_schedule(sigmas: Iterable[float]) -> str:
    """The inverse of :func:`parse_schedule`: ``"0.5,0.75,0.875,1"``."""
    return ",".join(f"{s:g}" if float(s).is_integer() else repr(float(s)) for s in sigmas)


class LRDecay(enum.Enum):
    CONSTANT = "constant"
    STEP = "step"  # x gamma at each milestone (the Caffe AlexNet example's "step" policy)
    COSINE = "cosine"


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate within one INQ step, as a function of progress in [0, 1] through it."""

    base: float
    decay: LRDecay = LRDecay.CONSTANT
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and self.base > 0) or not 0 < self.gamma <= 1:
            raise ValueError(f"base lr must be > 0 and gamma in (0, 1], got {self.base!r}, {self.gamma!r}")
        if not all(0 < m <= 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of an INQ step in (0, 1], got {self.milestones!r}")
        object.__setattr__(self, "decay", LRDecay(self.decay))
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    def at(self, progress: float) -> float:
        progress = min(max(float(progress), 0.0), 1.0)
        if self.decay is LRDecay.STEP:
            return self.base * self.gamma ** sum(progress >= m for m in self.milestones)
        if self.decay is LRDecay.COSINE:
            return self.base * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base
