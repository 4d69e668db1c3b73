"""Silero VAD at both of its rates, from ../shared/data/unlabeled/speech.npz: training samples
per branch and the speech-decision agreement of a model with the float one.

16 kHz: the file's 512-sample chunks with 64 samples of context (576 per call). 8 kHz: the
audio low-passed below 4 kHz and decimated by 2, in 256-sample chunks with 32 of context (288).
Training samples start from a zero ``state`` or from the float model's; the agreement runs the held-out chunks in order,
one call each with the state carried over, as Silero's own wrapper does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from tests.conftest import SHARED

SPEECH = SHARED / "data" / "unlabeled" / "speech.npz"
RATES = {16000: (512, 64), 8000: (256, 32)}  # chunk and context samples per call
THRESHOLD = 0.5


def decimate_by_2(audio: np.ndarray, taps: int = 63) -> np.ndarray:
    """A Hamming-windowed sinc low-pass at 0.45 of the new Nyquist rate, then every other sample."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 0.45 * np.sinc(0.45 * n) * np.hamming(taps)
    return np.convolve(audio, h / h.sum(), mode="same")[::2].astype(np.float32)


def calls(rate: int) -> np.ndarray:
    """Every chunk of the recording at ``rate`` with its context in front: [chunks, context + chunk]."""
    audio = np.load(SPEECH)["audio"]
    audio = audio if rate == 16000 else decimate_by_2(audio)
    chunk, context = RATES[rate]
    chunks = audio[: len(audio) // chunk * chunk].reshape(-1, chunk)
    before = np.concatenate([np.zeros((1, context), np.float32), chunks[:-1, -context:]])
    return np.concatenate([before, chunks], axis=1)


def save_samples(path: Path, rate: int, index, states: str = "zero") -> Path:
    """The calls at ``index`` as an .npz for --data/--val: ``input`` and, per sample, a zero
    ``state`` or (``states="float"``) the state the float model carries into that call."""
    x = calls(rate)[index]
    state = float_states(rate)[index] if states == "float" else np.zeros((len(x), 2, 128), np.float32)
    np.savez(path, input=x, state=state)
    return path


def float_states(rate: int, model_path: Path = SHARED / "models" / "silero_vad.onnx") -> np.ndarray:
    """[chunks, 2, 128]: the state the float model holds before each call, run in order."""
    states, state = [], np.zeros((2, 1, 128), np.float32)
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for x in calls(rate):
        states.append(state[:, 0])
        _, state = session.run(None, {"input": x[None], "state": state, "sr": np.array(rate, np.int64)})
    return np.stack(states)


def probabilities(model_path: Path | str, rate: int, index: slice, carried: bool = True) -> np.ndarray:
    """Speech probability of each call in ``index``: run in order with the model's own state
    carried over, or (``carried=False``) each call from the state the float model has there."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    sr = np.array(rate, np.int64)
    if not carried:
        x, states = calls(rate)[index], float_states(rate)[index]
        return np.array([float(session.run(None, {"input": c[None], "state": s[:, None], "sr": sr})[0][0, 0])
                         for c, s in zip(x, states)])
    state, probs = np.zeros((2, 1, 128), np.float32), []
    for x in calls(rate)[index]:
        out, state = session.run(None, {"input": x[None], "state": state, "sr": sr})
        probs.append(float(out[0, 0]))
    return np.array(probs)


def decision_agreement(reference: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((reference > THRESHOLD) == (probs > THRESHOLD)))
