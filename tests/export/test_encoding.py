"""From quantized values back to codes and n2: recovered exactly, and every refusal explained."""

import numpy as np
import pytest

from inq_onnx import codebook
from inq_onnx.export import encoding


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("axes", [(), (0,), (1,)])
def test_codebook_recovered_from_quantized_values(bits, axes):
    w = np.random.default_rng(bits).normal(size=(6, 5, 3)).astype(np.float32)
    book = codebook.make_codebook(w, bits, axes)
    q = codebook.quantize(w, book)
    enc = encoding.encode_tensor(q, bits, axes)
    np.testing.assert_array_equal(enc.n2, book.n2)
    np.testing.assert_array_equal(codebook.decode(enc.codes, book), q)
    assert enc.codes.dtype == np.int8 and enc.shape == q.shape
    encoding.check_exact(enc, q)
    np.testing.assert_array_equal(encoding.decoded_values(enc), q)


def test_uniform_per_channel_scale_collapses_to_one_value():
    q = np.array([[1.0, -0.5], [2.0, 1.0]], dtype=np.float32)  # rows: n1 = 0 and 1
    per_row = encoding.encode_tensor(q, 3, (0,))
    assert not per_row.uniform and per_row.scale.shape == (2, 1)
    same = encoding.encode_tensor(np.array([[1.0, 0.5], [-1.0, 0.5]], np.float32), 3, (0,))
    assert same.uniform and same.scale.shape == (1, 1)
    assert encoding.n2_listing(per_row) == [-1, 0] and encoding.n2_listing(same) == [-1, -1]
    assert encoding.n2_listing(encoding.encode_tensor(np.array([1.0, -2.0]), 3)) == 0


def test_off_codebook_values_are_named():
    q = np.array([1.0, 0.5, 0.3], dtype=np.float32)
    with pytest.raises(ValueError, match=r"1 of 3 values are off its 4-bit codebook \(first at index \[2\]: 0.3"):
        encoding.encode_tensor(q, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        encoding.encode_tensor(np.array([1.0, np.inf]), 4)
    with pytest.raises(ValueError, match="channel axes"):
        encoding.encode_tensor(q, 4, (3,))


def test_all_zero_tensor_encodes_to_zero_codes():
    enc = encoding.encode_tensor(np.zeros((2, 3), np.float32), 4, (0,))
    assert not enc.codes.any() and enc.n2.shape == (2, 1)


def test_negative_zeros_are_carried_and_float32_underflow_is_caught():
    negative_zero = np.array([1.0, -0.0, 0.0], dtype=np.float16)  # float16 underflow leaves these
    enc = encoding.encode_tensor(negative_zero, 4)
    assert enc.codes.tolist() == [4, 0, 0] and enc.stream_codes().tolist() == [4, -8, 0]
    encoding.check_exact(enc, negative_zero)
    assert np.signbit(encoding.decoded_values(enc, np.float16)).tolist() == [False, True, False]
    subnormal = np.array([2.0 ** -133, 2.0 ** -130], dtype=np.float32)  # n2 = -133: still exact
    encoding.check_exact(encoding.encode_tensor(subnormal, 4), subnormal)
    below = np.array([2.0 ** -100, 2.0 ** -150], dtype=np.float64)  # n2 = -163: 2^n2 underflows
    with pytest.raises(ValueError, match="below float32's range"):
        encoding.check_exact(encoding.encode_tensor(below, 8), below)


@pytest.mark.parametrize("axes", [(), (0,), (1,)])
def test_block_by_block_encoding_equals_the_whole_tensor(monkeypatch, axes):
    from inq_onnx import codebook

    w = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    q = codebook.quantize(w, codebook.make_codebook(w, 5, axes))
    whole = encoding.encode_tensor(q, 5, axes)
    monkeypatch.setattr(codebook, "BLOCK", 100)  # several blocks of rows
    blocked = encoding.encode_tensor(q, 5, axes)
    np.testing.assert_array_equal(blocked.codes, whole.codes)
    np.testing.assert_array_equal(blocked.n2, whole.n2)
    encoding.check_exact(blocked, q)
    bad = q.copy()
    bad[-1, -1] = 0.3
    with pytest.raises(ValueError, match="off its 5-bit codebook"):
        encoding.encode_tensor(bad, 5, axes)
