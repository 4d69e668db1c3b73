"""Fidelity of one-shot quantization over the model zoo of ../shared/models, as a table.

Every model at each bit-width, per tensor and per channel, scored against its float original on
real inputs (tests/zoo.py says which and how): top-1 agreement and accuracy for the
classifiers, output SQNR for all (box and class SQNR apart for YOLOv8), the agreement of the
>0.3 text mask for the PP-OCR detector and of the speech decision for Silero VAD. It is the
table ``make test-slow`` prints, without the checks (about a minute on 2 cores).

    .venv/bin/python bench/zoo_fidelity.py                          # the whole zoo, 2-5 bits
    .venv/bin/python bench/zoo_fidelity.py --bits 4 5 --detector    # what skipping fixed tensors is worth

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

from tests import zoo  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=list(zoo.BITS))
    parser.add_argument("--models", nargs="+", help="file names in ../shared/models (default: all)")
    parser.add_argument("--detector", action="store_true",
                        help="also quantize the tensors skipped as fixed, to compare (only models that have some)")
    args = parser.parse_args()
    if not zoo.MODELS.is_dir():
        print(f"{zoo.MODELS} is absent: this benchmark needs the project's ../shared folder", file=sys.stderr)
        return 1
    files = args.models or sorted(p.name for p in zoo.MODELS.glob("*.onnx") if p.name in zoo.ZOO)
    started = time.monotonic()
    rows = []
    for file in files:
        for per_channel in (False, True):
            for bits in args.bits:
                row = zoo.measure(file, bits, per_channel)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
