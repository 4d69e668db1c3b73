"""Recognise constants that sit on a weight input but were never learned, pure numpy.

Some exported models compute a fixed transform with a Conv or MatMul: YOLOv8's DFL decoder is a
1x1 Conv whose weight is the vector 0, 1, ..., 15 (the expected value of a 16-bin distribution);
audio models run their STFT as a Conv whose weight is a windowed DFT basis. Putting those on a
power-of-two grid wrecks the model (every box, every spectrum), and retraining cannot repair
them (they are not parameters). Two tests, each true of a hand-made tensor and, with
probability ~0, of a trained one:

* **Arithmetic progression.** The values, in storage order, are ``a + d·i`` for i = 0..n-1
  (n >= 4, d != 0) to float32 precision: an index ramp (``arange``) or a ``linspace``. Gradient
  descent does not leave a tensor exactly on a line. (A constant fill, d = 0, is not flagged:
  toy and test models use ``ones`` as weights, and a fill rounds to one power of two anyway.)
* **DFT/STFT basis.** Along the output-channel axis the tensor is a bank of >= 8 filters of
  length L >= 32. Each non-zero filter keeps >= 95 % of its energy in a few adjacent bins of its
  L-point real spectrum (a sinusoid under a smooth window: ``BAND`` bins, more when the window is
  shorter than L); the centre frequencies of >= 80 % of the filters lie on the DFT grid (a whole
  bin: the others sit next to DC or Nyquist, where a band folds onto itself) and those cover a
  gap-free run of >= 8 bins with no bin shared by more than two filters (a cos / sin pair).
  A learned filter spreads its energy; a learned Gabor or sinc bank has off-grid, unevenly
  (mel-like) spaced centre frequencies.

Both look at a few values first and give up early, so a large learned tensor costs little.
Not covered: DCT bases (half-bin frequencies), mel filterbanks, other fixed kernels.
"""

from __future__ import annotations

import math

import numpy as np

MIN_PROGRESSION = 4
"""Fewer values than this always lie on some line."""
RELATIVE_TOLERANCE = 1e-6
"""float32 keeps ~7 digits: a stored arange or linspace is on its line to about 1e-7."""

MIN_FILTERS = 8
MIN_LENGTH = 32
BAND = 5
"""Adjacent bins a sinusoid under a window as long as the filter may occupy (Hann: 3)."""
MIN_BAND_ENERGY = 0.95
ON_GRID = 0.15
"""A centre within this many bins of a whole bin is on the DFT grid."""
MIN_ON_GRID = 0.8
"""Filters next to DC and Nyquist fold onto themselves and drift off the grid: allow 20 %."""
MIN_GRID_BINS = 8
PAIR = 2
SCREEN_FILTERS = 8
"""Filters checked before the whole bank is transformed."""


def fixed_tensor_reason(array: np.ndarray, channel_axes: tuple[int, ...] | None = None) -> str | None:
    """Why ``array`` looks like a fixed, hand-made tensor rather than a learned weight, or None.

    ``channel_axes`` names the output-channel axes (as the weight table gives them); the filters
    of a DFT/STFT basis run along them. Without them, axis 0 is tried, and for a matrix axis 1 too.
    """
    w = np.asarray(array)
    if w.size == 0 or not np.issubdtype(w.dtype, np.floating):
        return None
    return progression_reason(w) or dft_basis_reason(w, channel_axes)


# --- arithmetic progressions ----------------------------------------------------------------

def progression_reason(w: np.ndarray) -> str | None:
    """A reason when the values in storage order are ``a + d·i``, d != 0 (an arange or linspace)."""
    flat = w.reshape(-1)
    n = flat.size
    if n < MIN_PROGRESSION:
        return None
    head = flat[:MIN_PROGRESSION].astype(np.float64)
    start, step = float(head[0]), float(head[1] - head[0])
    if step == 0 or not np.all(np.isfinite(head)) or not on_line(head, start, step) or not on_line(flat, start, step):
        return None
    stop = start + step * (n - 1)
    if start.is_integer() and step.is_integer():
        role = " (e.g. a DFL decoder)" if start == 0 and step == 1 else " (an index ramp)"
        text = f"{start:.0f}..{stop:.0f}" + ("" if abs(step) == 1 else f" step {step:.0f}")
        return f"a fixed arange {text}{role}, not a learned weight"
    return f"a fixed linspace {start:g}..{stop:g} ({n} values), not a learned weight"


def on_line(values: np.ndarray, start: float, step: float) -> bool:
    x = values.astype(np.float64)
    line = start + step * np.arange(x.size, dtype=np.float64)
    scale = max(abs(start), abs(float(line[-1])), float(np.finfo(np.float32).tiny))
    return bool(np.all(np.abs(x - line) <= RELATIVE_TOLERANCE * scale))


# --- DFT / STFT bases -----------------------------------------------------------------------

def dft_basis_reason(w: np.ndarray, channel_axes: tuple[int, ...] | None) -> str | None:
    for axes in filter_axes_to_try(w.ndim, channel_axes):
        layout = bank_layout(w, axes)
        if layout is None:
            continue
        moved, n_filters, length = layout
        head = moved[(0,) * (len(axes) - 1)][:SCREEN_FILTERS].reshape(-1, length)
        if band_limited(nonzero_rows(head)) and is_dft_basis(moved.reshape(n_filters, length)):
            return (f"looks like a fixed DFT/STFT basis ({n_filters} windowed sinusoids of length {length} "
                    f"on the DFT frequency grid), not a learned weight")
    return None


def filter_axes_to_try(ndim: int, channel_axes: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    if ndim < 2:  # no bank of filters (and a scalar has no axis to take modulo)
        return []
    if channel_axes:
        return [tuple(dict.fromkeys(a % ndim for a in channel_axes))]
    return [(0,), (1,)] if ndim == 2 else [(0,)]


def bank_layout(w: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, int, int] | None:
    """(view with the channel axes first, filters, filter length), or None when too small."""
    rest = tuple(a for a in range(w.ndim) if a not in axes)
    n_filters = math.prod(w.shape[a] for a in axes)
    length = math.prod(w.shape[a] for a in rest)
    if n_filters < MIN_FILTERS or length < MIN_LENGTH:
        return None
    return np.transpose(w, axes + rest), n_filters, length


def nonzero_rows(bank: np.ndarray) -> np.ndarray:
    bank = np.asarray(bank, dtype=np.float64)
    return bank[np.any(bank != 0, axis=1)]


def is_dft_basis(bank: np.ndarray) -> bool:
    bank = nonzero_rows(bank)
    if len(bank) < MIN_FILTERS or not np.all(np.isfinite(bank)):
        return False
    spectra = power_spectra(bank)
    width = band_width(bank)
    if not np.all(band_energy(spectra, width)[1] >= MIN_BAND_ENERGY):
        return False
    return on_regular_grid(band_centres(spectra, width))


def band_limited(bank: np.ndarray) -> bool:
    """Every (non-zero) filter keeps MIN_BAND_ENERGY of its energy in a few adjacent bins."""
    if len(bank) == 0 or not np.all(np.isfinite(bank)):
        return False
    return bool(np.all(band_energy(power_spectra(bank), band_width(bank))[1] >= MIN_BAND_ENERGY))


def power_spectra(bank: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(bank, axis=1)) ** 2


def band_width(bank: np.ndarray) -> int:
    """BAND bins for a window as long as the filter; a window on S < L samples (zero-padded, as
    when win_length < n_fft) widens its main lobe by L / S."""
    used = np.flatnonzero(np.any(bank != 0, axis=0))
    support = int(used[-1] - used[0] + 1) if used.size else bank.shape[1]
    return math.ceil(BAND * bank.shape[1] / support)


def band_energy(spectra: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(first bin, energy fraction) of the ``width`` adjacent bins holding the most energy."""
    if spectra.shape[1] < 2 * width:  # a band that wide is half the spectrum: no evidence
        return np.zeros(len(spectra), np.int64), np.zeros(len(spectra))
    cumulative = np.concatenate([np.zeros((len(spectra), 1)), np.cumsum(spectra, axis=1)], axis=1)
    windows = cumulative[:, width:] - cumulative[:, :-width]
    start = windows.argmax(axis=1)
    total = cumulative[:, -1]
    return start, windows[np.arange(len(spectra)), start] / np.where(total > 0, total, 1.0)


def band_centres(spectra: np.ndarray, width: int) -> np.ndarray:
    """Energy-weighted mean bin of each filter's best band: its frequency, in DFT bins."""
    start, _ = band_energy(spectra, width)
    bins = start[:, None] + np.arange(width)[None, :]
    power = np.take_along_axis(spectra, bins, axis=1)
    return np.sum(power * bins, axis=1) / np.sum(power, axis=1)


def on_regular_grid(centres: np.ndarray) -> bool:
    """Most centres on whole bins; those cover a gap-free run, at most PAIR filters per bin."""
    nearest = np.rint(centres)
    on_grid = np.abs(centres - nearest) <= ON_GRID
    if np.mean(on_grid) < MIN_ON_GRID:
        return False
    bins, counts = np.unique(nearest[on_grid].astype(np.int64), return_counts=True)
    return len(bins) >= MIN_GRID_BINS and counts.max() <= PAIR and bool(np.all(np.diff(bins) == 1))
