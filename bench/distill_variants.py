"""Which tensors distillation should match, measured: full INQ runs that differ only in
``--distill-tensors``, each scored against the float model on held-out inputs.

    .venv/bin/python bench/distill_variants.py cls                    # PP-OCR cls, 4 bits: outputs vs auto
    .venv/bin/python bench/distill_variants.py vad --variants none outputs auto
    .venv/bin/python bench/distill_variants.py det --epochs-per-step 1 --batch-size 4
    .venv/bin/python bench/distill_variants.py lenet --bits 3         # labels: cross-entropy alone vs + distillation

Data (../shared/data): cls trains on text lines x[:320] and is scored on x[320:] against
`rotated`; det on the first 48 photos, scored on the last 16 (output SQNR and IoU of the map
thresholded at 0.3, against float); vad (silero_vad_half) on the first 1500 speech chunks
with 64 samples of context and a zero state, scored by running the held-out chunks 1500.. in
order with the state fed back (speech decision > 0.5 agreeing with float; SQNR of the
probability and of the state); lenet on the first 4000 MNIST digits with labels, scored on
the 1000 test digits. Each run is `inq-onnx quantize` in a child process, with `nice`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS, DATA = SHARED / "models", SHARED / "data"
UNLABELED = DATA / "unlabeled"
FILES = {"cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx", "det": "ch_PP-OCRv4_det_infer.onnx",
         "vad": "silero_vad_half.onnx", "lenet": "lenet5_mnist.onnx"}
VAD_TRAIN, CONTEXT = 1500, 64


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    ref, q = ref.astype(np.float64), q.astype(np.float64)
    noise = np.sum((ref - q) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise))


def vad_chunks() -> np.ndarray:
    chunks = np.load(UNLABELED / "speech.npz")["chunks"]
    context = np.concatenate([np.zeros((1, CONTEXT), np.float32), chunks[:-1, -CONTEXT:]])
    return np.concatenate([context, chunks], axis=1)


def write_data(name: str, folder: Path) -> tuple[Path, Path]:
    train, val = folder / f"{name}_train.npz", folder / f"{name}_val.npz"
    if name == "cls":
        t = np.load(UNLABELED / "textlines.npz")
        np.savez(train, x=t["x"][:320])
        np.savez(val, x=t["x"][320:], labels=t["rotated"][320:])
    elif name == "det":
        x = np.load(UNLABELED / "photos_det.npz")["x_det"]
        np.savez(train, x=x[:48])
        np.savez(val, x=x[48:])
    elif name == "vad":
        x = vad_chunks()
        state = np.zeros((len(x), 2, 128), np.float32)
        np.savez(train, input=x[:VAD_TRAIN], state=state[:VAD_TRAIN])
        np.savez(val, input=x[VAD_TRAIN:], state=state[VAD_TRAIN:])
    else:
        d = np.load(DATA / "mnist_5k.npz")
        np.savez(train, input=d["x_train"].astype(np.float32) / 255, labels=d["y_train"])
        np.savez(val, input=d["x_test"].astype(np.float32) / 255, labels=d["y_test"])
    return train, val


def run_vad(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Held-out chunks in order, the state fed back: probabilities and states."""
    sess, x = _session(path), vad_chunks()[VAD_TRAIN:]
    state, probs, states = np.zeros((2, 1, 128), np.float32), [], []
    for chunk in x:
        out, state = sess.run(None, {"input": chunk[None], "state": state})
        probs.append(out[0, 0])
        states.append(state)
    return np.array(probs), np.concatenate(states)


def score(name: str, path: Path, float_path: Path, val: Path) -> dict:
    data = np.load(val)
    if name == "vad":
        (p_ref, s_ref), (p, s) = run_vad(float_path), run_vad(path)
        return {"agreement": float(np.mean((p_ref > 0.5) == (p > 0.5))), "sqnr_db": sqnr_db(p_ref, p),
                "state_sqnr_db": sqnr_db(s_ref, s)}
    key = "input" if name == "lenet" else "x"
    outs = []
    for model in (float_path, path):
        sess = _session(model)
        outs.append(np.concatenate([sess.run(None, {key: data[key][i:i + 8]})[0] for i in range(0, len(data[key]), 8)]))
    ref, q = outs
    result = {"sqnr_db": sqnr_db(ref, q)}
    if name == "det":
        a, b = ref > 0.3, q > 0.3
        result["iou_0.3"] = float(np.sum(a & b) / max(1, np.sum(a | b)))
    else:
        result["agreement"] = float(np.mean(ref.argmax(1) == q.argmax(1)))
        result["accuracy"] = float(np.mean(q.argmax(1) == data["labels"]))
        result["float_accuracy"] = float(np.mean(ref.argmax(1) == data["labels"]))
    return result


def quantize(model: Path, out: Path, train: Path, val: Path, args, variant: str) -> float:
    command = ["nice", "-n", "5", str(REPO / ".venv/bin/inq-onnx"), "quantize", str(model), "--bits", str(args.bits),
               "-o", str(out), "--run-dir", str(out.with_suffix(".run")), "-q", "--no-verify"]
    if variant != "one-shot":
        command += ["--data", str(train), "--val", str(val), "--lr", str(args.lr), "--batch-size", str(args.batch_size)]
        command += ["--epochs-per-step", str(args.epochs_per_step)] if args.epochs_per_step is not None else []
        command += ["--schedule", args.schedule] if args.schedule else []
        if args.model == "lenet":
            command += ["--distill-tensors", variant] if variant != "labels" else ["--distill-tensors", "none"]
        else:
            command += ["--loss", "distill", "--distill-tensors", variant]
    started = time.monotonic()
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(FILES))
    parser.add_argument("--variants", nargs="+", help="--distill-tensors values; 'one-shot' (no data), "
                        "'labels' (lenet: cross-entropy alone) [default: outputs auto; lenet: labels outputs]")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs-per-step", type=int)
    parser.add_argument("--schedule")
    parser.add_argument("--out", type=Path, help="keep the models here [default: a temporary folder]")
    args = parser.parse_args()
    variants = args.variants or (["labels", "outputs"] if args.model == "lenet" else ["outputs", "auto"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        train, val = write_data(args.model, folder)
        float_path = MODELS / FILES[args.model]
        for variant in variants:
            out = folder / f"{args.model}.{args.bits}b.{variant.replace(',', '+')}.onnx"
            try:
                seconds = quantize(float_path, out, train, val, args, variant)
            except RuntimeError as error:  # e.g. a loss that became nan: a result too
                print(f"{args.model} {args.bits} b {variant}: failed ({error})", flush=True)
                continue
            figures = ", ".join(f"{k} {v:.4g}" for k, v in score(args.model, out, float_path, val).items())
            print(f"{args.model} {args.bits} b {variant}: {figures}, {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
