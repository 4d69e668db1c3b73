"""Training batches: mixup of distillation batches, reproducible, and never of held-out feeds."""

from __future__ import annotations

import numpy as np
import pytest

from inq_onnx.data import Samples
from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.feeder import mix
from inq_onnx.train.options import TrainOptions


def samples() -> Samples:
    rng = np.random.default_rng(0)
    return Samples({"x": rng.random((12, 3)).astype(np.float32), "ids": np.arange(12)[:, None],
                    "state": rng.random((2, 12, 4)).astype(np.float32).swapaxes(0, 1)},
                   None, "test", sample_axes={"state": 1})


def test_a_share_of_the_batch_is_mixed_with_one_weight_per_sample_across_float_inputs():
    s, index = samples(), np.arange(2, 10)
    plain = s.take(index)
    feeds = mix(s, index, 0.5, np.random.default_rng(1))
    assert {k: v.shape for k, v in feeds.items()} == {k: v.shape for k, v in plain.items()}
    np.testing.assert_array_equal(feeds["ids"], plain["ids"])  # integers are never mixed
    changed = ~np.all(np.isclose(feeds["x"], plain["x"]), axis=1)
    changed_state = ~np.all(np.isclose(feeds["state"], plain["state"]), axis=(0, 2))  # sample axis 1
    assert 0 < changed.sum() < len(index) and np.array_equal(changed, changed_state)
    x = s.inputs["x"][index]
    for i in np.flatnonzero(changed):  # each mixed sample lies between itself and one other of the batch
        ok = [np.allclose(feeds["x"][i], w * x[i] + (1 - w) * x[j]) for j in range(len(index))
              for w in [np.dot(feeds["x"][i] - x[j], x[i] - x[j]) / max(np.dot(x[i] - x[j], x[i] - x[j]), 1e-12)]]
        assert any(ok)


def test_mixing_is_reproducible_and_none_or_all_by_share():
    s, index = samples(), np.arange(8)
    a, b = (mix(s, index, 0.5, np.random.default_rng(3)) for _ in range(2))
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(mix(s, index, 0.0, np.random.default_rng(3))["x"], s.take(index)["x"])
    everything = mix(s, index, 1.0, np.random.default_rng(3))["x"]
    partner = np.random.default_rng(3).permutation(8)  # mix's first draw
    changed = ~np.all(np.isclose(everything, s.take(index)["x"]), axis=1)
    np.testing.assert_array_equal(changed, partner != np.arange(8))  # all but those drawn to mix with themselves


def test_mixup_is_for_distillation_only_and_checked():
    assert TrainOptions().mixup_for(True) == 0.0  # off by default
    assert TrainOptions(mixup=0.5).mixup_for(True) == 0.5 and TrainOptions(mixup=0.5).mixup_for(False) == 0.0
    with pytest.raises(InvalidOptionError, match="mixup share"):
        TrainOptions(mixup=1.5)
