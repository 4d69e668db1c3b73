"""Masked optimizers for INQ re-training (Eq. 8), pure numpy, in place on one flat float32 buffer.

    W <- W - update * T        T = 1 for a float (trainable) entry, 0 for a frozen (quantized) one

Frozen entries must stay *bit-identical*. Multiplying the update by T is not enough in IEEE
arithmetic: ``inf * 0`` is NaN, and ``-0.0 - (-0.0)`` is ``+0.0`` (a frozen -0.0 would flip sign).
So T is applied as a bit mask: the update's bits are AND-ed with 0xFFFFFFFF (trainable) or 0
(frozen), which makes the subtracted amount exactly +0.0, and ``w - (+0.0)`` is ``w`` for every w.
The same mask is applied to the gradient before it enters momentum or Adam moments, so their
frozen entries stay 0. Masked numpy ufuncs (``where=``) would be exact too, but ~40x slower on the
scattered masks INQ makes; the AND is one cheap pass. The learning rate within an INQ step
follows :class:`inq_onnx.schedule.LRSchedule` (set ``optimizer.lr`` before each step).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MaskedSGD", "MaskedAdamW", "trainable_mask"]

_ALL_BITS = np.uint32(0xFFFFFFFF)


def trainable_mask(parts: list[np.ndarray | int]) -> np.ndarray:
    """The flat float32 T of a buffer that concatenates parameters in order: for a quantized
    parameter give its bool frozen mask (T = 1 - mask), for any other give its size (T = 1)."""
    pieces = [np.ones(p, np.float32) if isinstance(p, int) else (~np.asarray(p, bool)).reshape(-1) for p in parts]
    return np.concatenate(pieces, dtype=np.float32) if pieces else np.zeros(0, np.float32)


class _MaskedOptimizer:
    _buffers: tuple[str, ...] = ()

    def __init__(self, trainable: np.ndarray, *, lr: float, weight_decay: float):
        if not (math.isfinite(lr) and lr >= 0) or not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"lr and weight_decay must be finite and >= 0, got {lr!r}, {weight_decay!r}")
        self.lr, self.weight_decay, self.t = float(lr), float(weight_decay), 0
        self._allocate(self._bits_of(trainable))

    def _allocate(self, keep: np.ndarray) -> None:
        """Every buffer a step needs, once: two scratch arrays and the zeroed state."""
        self._keep, n = keep, keep.size
        self._work, self._spare = np.zeros(n, np.float32), np.zeros(n, np.float32)
        self._state = {name: np.zeros(n, np.float32) for name in self._buffers}

    @staticmethod
    def _bits_of(trainable: np.ndarray) -> np.ndarray:
        t = np.asarray(trainable)
        if t.ndim != 1 or not np.all((t == 0) | (t == 1)):
            raise ValueError("trainable must be a flat array of 1.0 (trainable) and 0.0 (frozen)")
        return np.where(t == 1, _ALL_BITS, np.uint32(0))

    @property
    def size(self) -> int:
        return self._keep.size

    @property
    def trainable(self) -> np.ndarray:
        """A float32 copy of T (1.0 trainable, 0.0 frozen)."""
        return (self._keep != 0).astype(np.float32)

    def set_trainable(self, trainable: np.ndarray) -> None:
        """Freeze more entries (after a partition step); raises ValueError if one would thaw."""
        keep = self._bits_of(trainable)
        if keep.size != self.size:
            raise ValueError(f"trainable has {keep.size} entries, the optimizer {self.size}")
        thawed = int(np.count_nonzero(keep & ~self._keep))
        if thawed:
            raise ValueError(f"{thawed} frozen entries would become trainable again; masks only grow")
        self._keep = keep
        [self._mask(buffer) for buffer in self._state.values()]

    def reset(self) -> None:
        """The learning-rate restart of each INQ step: zero every moment and the step count."""
        for buffer in self._state.values():
            buffer.fill(0.0)
        self.t = 0

    def _mask(self, x: np.ndarray) -> None:
        """x *= T, exactly: frozen entries become +0.0 whatever they held (inf, NaN, -0.0)."""
        bits = x.view(np.uint32)
        np.bitwise_and(bits, self._keep, out=bits)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """One update of ``params`` in place from ``grads`` (flat float32, the optimizer's size)."""
        for what, a in (("params", params), ("grads", grads)):
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != (self.size,):
                raise ValueError(f"{what} must be a flat float32 array of {self.size} entries")
        if not params.flags.c_contiguous or not params.flags.writeable:
            raise ValueError("params must be a writeable contiguous array (it is updated in place)")
        self.t += 1
        update = self._update(params, grads)
        self._mask(update)
        np.subtract(params, update, out=params)

    def _update(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray | float]:
        """The buffers (copies) plus ``lr`` and ``t``; arrays are safetensors-compatible."""
        state: dict[str, np.ndarray | float] = {name: b.copy() for name, b in self._state.items()}
        state.update(lr=self.lr, t=float(self.t), trainable=self.trainable)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray | float]) -> None:
        missing = {*self._buffers, "lr", "t", "trainable"} - set(state)
        if missing:
            raise ValueError(f"the optimizer state lacks {sorted(missing)}")
        keep = self._bits_of(state["trainable"])
        for name in self._buffers:
            if np.shape(state[name]) != (keep.size,):
                raise ValueError(f"the optimizer state '{name}' has shape {np.shape(state[name])}, not ({keep.size},)")
        self._allocate(keep)
        for name in self._buffers:
            self._state[name][:] = state[name]
        self.lr, self.t = float(state["lr"]), int(state["t"])


class MaskedSGD(_MaskedOptimizer):
    """SGD in PyTorch's form (coupled weight decay, no dampening): g = grad + wd*w,
    v = momentum*v + g, update = lr*(g + momentum*v if nesterov else v). Caffe keeps lr inside v;
    the two agree while lr is constant."""

    _buffers = ("momentum_buffer",)

    def __init__(self, trainable: np.ndarray, *, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = False):
        super().__init__(trainable, lr=lr, weight_decay=weight_decay)
        if not 0.0 <= momentum < 1.0 or (nesterov and momentum == 0.0):
            raise ValueError(f"momentum must be in [0, 1) (and > 0 with nesterov), got {momentum!r}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, params, grads):
        g = self._work
        np.multiply(params, np.float32(self.weight_decay), out=g)
        g += grads
        self._mask(g)
        v = self._state["momentum_buffer"]
        v *= np.float32(self.momentum)
        v += g
        if self.nesterov:
            g += np.multiply(v, np.float32(self.momentum), out=self._spare)
        else:
            np.copyto(g, v)
        g *= np.float32(self.lr)
        return g


class MaskedAdamW(_MaskedOptimizer):
    """AdamW (Loshchilov & Hutter; PyTorch's defaults), decoupled decay: update =
    lr*(m_hat / (sqrt(v_hat) + eps) + wd*w)."""

    _buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, trainable: np.ndarray, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(trainable, lr=lr, weight_decay=weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2 or not eps > 0:
            raise ValueError(f"betas must be two values in [0, 1) and eps > 0, got {betas!r}, {eps!r}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def _update(self, params, grads):
        (b1, b2), g, m, v = self.betas, self._work, self._state["exp_avg"], self._state["exp_avg_sq"]
        np.copyto(g, grads)
        self._mask(g)
        m *= np.float32(b1)
        m += np.multiply(g, np.float32(1 - b1), out=self._spare)
        v *= np.float32(b2)
        g *= g
        g *= np.float32(1 - b2)
        v += g
        np.sqrt(v, out=g)
        g *= np.float32(1 / math.sqrt(1 - b2**self.t))
        g += np.float32(self.eps)
        np.divide(m, g, out=g)
        g *= np.float32(self.lr / (1 - b1**self.t))
        if self.weight_decay:
            g += np.multiply(params, np.float32(self.lr * self.weight_decay), out=self._spare)
        return g

