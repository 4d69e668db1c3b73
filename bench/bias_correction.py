"""One-shot quantization with and without bias correction, on held-out real inputs.

Calibration samples (at most 256, a seeded subset) never overlap the scored ones: MNIST models
calibrate on the training split and are scored on the 1000 test images; the PP-OCR text-direction
classifier calibrates on the first 200 text lines and is scored on the other 200.

    .venv/bin/python bench/bias_correction.py                       # lenet5, resnet8, vit, cls at 3-4 bits
    .venv/bin/python bench/bias_correction.py --bits 2 3 4 5 --per-channel
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is run as a script

from inq_onnx.data import Samples  # noqa: E402
from inq_onnx.options import QuantizeOptions  # noqa: E402
from inq_onnx.quantize import quantize_model  # noqa: E402
from inq_onnx.report import format_table  # noqa: E402
from inq_onnx.runtime import session  # noqa: E402
from tests import zoo  # noqa: E402

CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
MODELS = ("lenet5_mnist.onnx", "resnet8_mnist.onnx", "vit_mnist.onnx", CLS)


def data(file: str) -> tuple[Samples, dict, np.ndarray]:
    """(calibration samples, scored feeds, scored labels)."""
    if file == CLS:
        t = zoo.npz(zoo.UNLABELED / "textlines.npz")
        return Samples({"x": t["x"][:200]}, None, "textlines[:200]"), {"x": t["x"][200:]}, t["rotated"][200:]
    d = zoo.npz(zoo.DATA / "mnist_5k.npz")
    return (Samples({"input": d["x_train"].astype(np.float32) / 255.0}, None, "mnist train"),
            {"input": d["x_test"].astype(np.float32) / 255.0}, d["y_test"])


def logits(model, feeds: dict) -> np.ndarray:
    sess = session(model)
    name = next(iter(feeds))
    x = feeds[name]
    return np.concatenate([sess.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--range", default="auto")
    args = parser.parse_args()
    rows = []
    started = time.monotonic()
    for file in args.models:
        calib, feeds, labels = data(file)
        ref = logits(zoo.float_model(file), feeds)
        row = [file.removesuffix(".onnx"), f"{np.mean(ref.argmax(-1) == labels):.3f}"]
        for bits in args.bits:
            cells = []
            for correct in (False, True):
                options = QuantizeOptions(bits=bits, per_channel=args.per_channel, range=args.range,
                                          bias_correction="on" if correct else "off")
                result = quantize_model(zoo.float_model(file), options, samples=calib if correct else None)
                out = logits(result.model, feeds)
                cells.append(f"{np.mean(out.argmax(-1) == labels):.3f} ({np.mean(out.argmax(-1) == ref.argmax(-1)):.3f})")
                if correct and result.bias_correction is not None:
                    print(f"  {file} {bits} b: {len(result.bias_correction.corrected)} corrected, "
                          f"{len(result.bias_correction.skipped)} left alone {result.bias_correction.error or ''}",
                          file=sys.stderr)
            row.append(" -> ".join(cells))
        rows.append(row)
        print(f"  {file} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    codebook = "per channel" if args.per_channel else "per tensor"
    print(f"accuracy (agreement with float), without -> with bias correction; {codebook}, range {args.range}")
    print(format_table(rows, ["model", "float", *[f"{b} bits" for b in args.bits]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
