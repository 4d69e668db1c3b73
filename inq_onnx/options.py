"""Options as typed, validated data."""

from __future__ import annotations

from dataclasses import dataclass

from inq_onnx.codebook import MAX_BITS, MIN_BITS, check_bits
from inq_onnx.bias_correction import BiasCorrection
from inq_onnx.codebook_range import RangeRule
from inq_onnx.errors import InvalidOptionError
from inq_onnx.feedback import Rounding


@dataclass(frozen=True)
class QuantizeOptions:
    """What one-shot quantization does. ``include``/``exclude`` are names or glob patterns;
    ``range`` is the rule that picks each codebook's n1 (see ``codebook_range``);
    ``bias_correction``: with samples, move each layer's bias by the mean output shift that
    rounding its weights causes (see ``calibration``); ``rounding``: how full INQ rounds each
    step's newly frozen weights when it has samples (see ``compensation``)."""

    bits: int = 4
    per_channel: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int = 0
    range: RangeRule = RangeRule.AUTO
    bias_correction: BiasCorrection = BiasCorrection.AUTO
    rounding: Rounding = Rounding.FEEDBACK

    def __post_init__(self) -> None:
        try:
            check_bits(self.bits)
        except ValueError:
            raise InvalidOptionError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {self.bits!r}",
                                     "pass e.g. --bits 4 (the paper uses 2 to 5)") from None
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 0:
            raise InvalidOptionError(f"min_size must be a non-negative integer, got {self.min_size!r}",
                                     "pass e.g. --min-size 64")
        try:
            object.__setattr__(self, "range", RangeRule(self.range))
        except ValueError:
            raise InvalidOptionError(f"range must be one of {[r.value for r in RangeRule]}, got {self.range!r}",
                                     "pass e.g. --range mse") from None
        try:
            object.__setattr__(self, "bias_correction", BiasCorrection(self.bias_correction))
        except ValueError:
            raise InvalidOptionError(f"bias_correction must be one of {[c.value for c in BiasCorrection]}, got "
                                     f"{self.bias_correction!r}", "pass e.g. --bias-correction on") from None
        try:
            object.__setattr__(self, "rounding", Rounding(self.rounding))
        except ValueError:
            raise InvalidOptionError(f"rounding must be one of {[r.value for r in Rounding]}, got {self.rounding!r}",
                                     "pass e.g. --rounding nearest") from None
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def as_dict(self) -> dict:
        return {"bits": self.bits, "per_channel": self.per_channel, "include": list(self.include),
                "exclude": list(self.exclude), "min_size": self.min_size,
                "range": self.range.value, "bias_correction": self.bias_correction.value,
                "rounding": self.rounding.value}
