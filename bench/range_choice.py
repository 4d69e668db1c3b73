"""One-shot n1 rules over the zoo: each static rule, and `--range auto` judged by the outputs.

For each model and bit-width, one-shot quantization with the static rules (auto without samples,
paper, mse, mae) and with the rules judged by the outputs on the model's training samples (as
`quantize --val TRAIN` does, bias correction off to isolate the rules), scored on held-out data
as bench/zoo_inq.py scores it (its docstring says which data). Prints one line per setting.

    .venv/bin/python bench/range_choice.py --models silero_vad_half resnet8_mnist --bits 3 4
    .venv/bin/python bench/range_choice.py --models cls --bits 4 --per-channel
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo_inq  # noqa: E402

from inq_onnx.data import load_samples, pinned_values  # noqa: E402
from inq_onnx.options import QuantizeOptions  # noqa: E402
from inq_onnx.quantize import quantize_model  # noqa: E402
from inq_onnx.runtime import session  # noqa: E402
from tests import zoo  # noqa: E402

STATIC = ("auto", "paper", "mse", "mae")


def figures(case, ref, model) -> str:
    scores = case.score(ref, case.evaluate(session(model)))
    return " / ".join(zoo_inq.FORMATS[k].format(scores[k]) for k in case.show)


def measure(name: str, bits: int, per_channel: bool, work: Path) -> str:
    case = zoo_inq.CASES[name]
    model = onnx.load(str(zoo.MODELS / case.file))
    train = {k: v for k, v in case.train().items() if k != "labels"}
    path = work / f"{name}.train.npz"
    np.savez(path, **train)
    pins = pinned_values(model, dict(p.split("=") for p in case.pins))
    samples = load_samples(path, model, pinned=tuple(pins))
    ref = case.evaluate(session(model))
    cells = [f"{rule} {figures(case, ref, quantize_model(model, options(bits, per_channel, rule)).model)}"
             for rule in STATIC]
    started = time.monotonic()
    result = quantize_model(model, options(bits, per_channel, "auto"), samples=samples, pins=pins)
    seconds = time.monotonic() - started
    c = result.range_choice
    judged = f"judged {figures(case, ref, result.model)}"
    detail = (f"({c.samples} samples, {c.runs} trials, {len(c.changed)} changed, output error "
              f"{c.error_static:.3g} -> {c.error_chosen:.3g}, {seconds:.1f} s)") if not c.error else f"({c.error})"
    return f"{name} {bits} b {'channel' if per_channel else 'tensor'}: " + "; ".join(cells) + f"; {judged} {detail}"


def options(bits: int, per_channel: bool, rule: str) -> QuantizeOptions:
    return QuantizeOptions(bits=bits, per_channel=per_channel, range=rule, bias_correction="off")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo_inq.CASES), choices=list(zoo_inq.CASES))
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--per-channel", action="store_true")
    args = parser.parse_args()
    if not zoo.MODELS.is_dir():
        print(f"{zoo.MODELS} is absent: this benchmark needs the project's ../shared folder", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="inq-range-") as work:
        for name in args.models:
            for bits in args.bits:
                print(measure(name, bits, args.per_channel, Path(work)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
