import pytest

from inq_onnx.errors import InvalidOptionError
from inq_onnx.train.options import TrainOptions


@pytest.mark.parametrize("samples, batch", [(4000, 32), (320, 32), (288, 28), (48, 4), (43, 4), (3, 3)])
def test_batch_size_follows_the_data_size_unless_given(samples, batch):
    assert TrainOptions().batch_for(samples) == batch
    assert TrainOptions(batch_size=16).batch_for(samples) == min(16, samples)


@pytest.mark.parametrize("samples, epochs", [
    (3600, 8),     # 112 batches: 8 epochs (~900 updates), the paper's bound for large data
    (64_000, 1),   # 2000 batches: one epoch is the 2,000 updates
    (288, 25),     # 10 batches of 28: at least 250 updates
    (43, 25),      # 10 batches of 4
])
def test_epochs_give_about_2000_updates_within_8_epochs_but_never_fewer_than_250(samples, epochs):
    options = TrainOptions()
    assert options.epochs_for(samples) == epochs
    assert options.epochs_for(samples) * (samples // options.batch_for(samples)) >= min(250, 2000)
    assert TrainOptions(epochs_per_step=3).epochs_for(samples) == 3


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(InvalidOptionError, match="batch size"):
        TrainOptions(batch_size=0)
