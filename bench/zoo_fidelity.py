"""Fidelity of one-shot quantization over the model zoo of ../shared/models, as a table.

Every model at each bit-width, per tensor and per channel, scored against its float original on
real inputs (tests/zoo.py says which and how): top-1 agreement and accuracy for the
classifiers, output SQNR for all (box and class SQNR apart for YOLOv8), the agreement of the
>0.3 text mask for the PP-OCR detector and of the speech decision for Silero VAD. It is the
table ``make test-slow`` prints, without the checks (about a minute on 2 cores).

    .venv/bin/python bench/zoo_fidelity.py                          # the whole zoo, 2-5 bits
    .venv/bin/python bench/zoo_fidelity.py --bits 4 5 --detector    # what skipping fixed tensors is worth
    .venv/bin/python bench/zoo_fidelity.py --range paper mse        # the two n1 rules side by side

``--detector`` shows, for the models where tensors are skipped as hand-made (YOLOv8's DFL vector,
Silero's STFT bases), three rows per setting: the detector on (the default), off (those tensors
quantized anyway with ``include``), and those tensors alone quantized (every learned weight
excluded): the damage they do by themselves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is run as a script

from inq_onnx.codebook_range import RangeRule  # noqa: E402
from inq_onnx.report import format_table  # noqa: E402
from tests import zoo  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=list(zoo.BITS))
    parser.add_argument("--models", nargs="+", help="file names in ../shared/models (default: all)")
    parser.add_argument("--range", nargs="+", default=["auto"], choices=[r.value for r in RangeRule],
                        help="n1 rule(s); with several, a side-by-side table follows")
    parser.add_argument("--detector", action="store_true",
                        help="also quantize the tensors skipped as fixed, to compare (only models that have some)")
    args = parser.parse_args()
    if not zoo.MODELS.is_dir():
        print(f"{zoo.MODELS} is absent: this benchmark needs the project's ../shared folder", file=sys.stderr)
        return 1
    files = args.models or sorted(p.name for p in zoo.MODELS.glob("*.onnx") if p.name in zoo.ZOO)
    started = time.monotonic()
    rows, by_rule = [], {}
    for file in files:
        for per_channel in (False, True):
            for bits in args.bits:
                for rule in args.range[1:]:
                    by_rule[rule, file, per_channel, bits] = zoo.measure(file, bits, per_channel, range=rule)
                row = zoo.measure(file, bits, per_channel, range=args.range[0])
                by_rule[args.range[0], file, per_channel, bits] = row
                if args.detector:
                    if not row.note.startswith("skipped as fixed"):
                        continue
                    rows.append(zoo.Row(*[getattr(row, f) for f in ("model", "bits", "per_channel", "quantized",
                                                                      "weights", "score")], note="detector on"))
                    rows.append(zoo.measure(file, bits, per_channel, detector=False, label="detector off (fixed tensors quantized)"))
                    rows.append(zoo.measure(file, bits, per_channel, only_fixed=True, label="only the fixed tensors quantized"))
                else:
                    rows.append(row)
        print(f"  {file} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    for file in files:
        print(f"{file}: {zoo.ZOO[file].inputs}")
    print(zoo.format_rows(rows))
    if len(args.range) > 1:
        print(f"\nn1 rules side by side (agreement; SQNR dB): {' / '.join(args.range)}")
        print(side_by_side(by_rule, args.range, files, args.bits))
    return 0


def side_by_side(by_rule: dict, rules: list[str], files: list[str], bits: list[int]) -> str:
    lines = []
    for file in files:
        for per_channel in (False, True):
            cells = []
            for b in bits:
                scores = [by_rule[rule, file, per_channel, b].score for rule in rules]
                if scores[0] is None:
                    cells.append("-")
                    continue
                agreement = " / ".join(zoo.cell(s.agreement, ".3f") for s in scores) if scores[0].agreement is not None else ""
                sqnr = " / ".join(zoo.cell(s.sqnr_db, ".1f") for s in scores)
                cells.append(f"{agreement}; {sqnr}" if agreement else sqnr)
            lines.append([file.removesuffix(".onnx"), "channel" if per_channel else "tensor", *cells])
    return format_table(lines, ["model", "codebook", *[f"{b} bits" for b in bits]])


if __name__ == "__main__":
    sys.exit(main())
