"""What bench/fuzz_mutations.py found, one recipe each: the broken model is refused with one
line naming the tensor or field and the fix, never a traceback (``internal error``).

Each recipe edits a good model the way the fuzz mutant did (the fuzz case it came from is in
the comment); the test runs the command in-process, as the fuzz does.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from inq_onnx.errors import InqError
from inq_onnx.graph.io import load_model
from inq_onnx_cli.main import main
from tests.conftest import FIXTURE, conv_gemm_model


def fixture() -> onnx.ModelProto:
    return onnx.load(str(FIXTURE))


def weight(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def set_type(name: str, data_type: int):
    return lambda m: setattr(weight(m, name), "data_type", data_type)


def drop_last_dim(name: str):
    return lambda m: weight(m, name).dims.pop()


def set_dim(name: str, index: int, value: int):
    return lambda m: weight(m, name).dims.__setitem__(index, value)


def extend_raw(name: str, n: int):
    return lambda m: setattr(weight(m, name), "raw_data", weight(m, name).raw_data + bytes(n))


def float_data_instead(name: str, count: int):
    def edit(m):
        t = weight(m, name)
        t.ClearField("raw_data")
        t.float_data.extend([0.5] * count)
    return edit


def constant_weight_model() -> onnx.ModelProto:
    """conv_gemm_model with its Conv weight in a Constant node (as PaddleOCR models keep them)."""
    m = conv_gemm_model()
    w = weight(m, "conv.w")
    m.graph.initializer.remove(w)
    m.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["conv.w"], value=w))
    return m


def constant_dims(m: onnx.ModelProto) -> None:
    m.graph.node[0].attribute[0].t.dims[0] = 5


RECIPES = [
    # (id, model, edit, fragment); fuzz cases #23, #106: a data_type no numpy dtype exists for
    ("data-type-999", fixture, set_type("conv1.weight", 999), "unknown data type (999)"),
    ("data-type-minus-1", fixture, set_type("fc2.weight", -1), "unknown data type (-1)"),
    ("data-type-undefined", fixture, set_type("fc1.weight", 0), "fc1.weight"),
    # #24, #48: a dim dropped, the data left as it was (cannot reshape array of size ...)
    ("rank-dropped", fixture, drop_last_dim("conv2.weight"), "tensor 'conv2.weight' holds"),
    # #10: a huge dim (2**62) with the data unchanged: refused without allocating anything
    ("dim-huge", fixture, set_dim("fc1.weight", 0, 2**62), "fc1.weight"),
    ("dim-2-to-40", fixture, set_dim("fc1.weight", 0, 2**40), "tensor 'fc1.weight' holds"),
    ("dim-grown", fixture, set_dim("conv1.weight", 0, 9), "tensor 'conv1.weight' holds"),
    # #137: raw bytes not a multiple of the element size (buffer size must be a multiple ...)
    ("raw-data-extended", fixture, extend_raw("conv2.weight", 27), "holds"),
    ("float16-label-on-float32-data", fixture, set_type("fc2.weight", onnx.TensorProto.FLOAT16), "need"),
    # #50: float_data of the wrong length in place of raw_data
    ("float-data-short", fixture, float_data_instead("fc1.weight", 16), "holds 16 float_data entries"),
    ("constant-node-dims", constant_weight_model, constant_dims, "tensor 'conv.w' holds"),
]


@pytest.mark.parametrize("build, edit, fragment", [r[1:] for r in RECIPES], ids=[r[0] for r in RECIPES])
def test_mutant_is_refused_in_one_line(tmp_path, capsys, build, edit, fragment):
    model = build()
    edit(model)
    with pytest.raises(InqError, match="To fix this"):
        load_model(model)
    path = tmp_path / "mutant.onnx"
    path.write_bytes(model.SerializeToString())
    before = path.read_bytes()
    code = main(["quantize", str(path), "--bits", "4", "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 3) and len(err) == 1, err
    assert err[0].startswith("error: ") and fragment in err[0] and "To fix this" in err[0], err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mutant.onnx"]


def scalar_weight(m: onnx.ModelProto) -> None:
    """Fuzz seed 1 #59: a Conv weight replaced by a scalar (ZeroDivisionError in the DFT-basis filter)."""
    weight(m, "conv1.weight").CopyFrom(onnx.numpy_helper.from_array(np.float32(0.7), "conv1.weight"))


def near_float32_max(m: onnx.ModelProto) -> None:
    """Fuzz seed 1 #160: weights near float32's max rounded to 2^128 = inf, and verification then
    failed with the output left behind. n1 is now capped at 2^127."""
    w = onnx.numpy_helper.to_array(weight(m, "fc1.weight"))
    big = np.where(w >= 0, np.float32(3.4e38), np.float32(-3.0e38)).astype(np.float32)
    weight(m, "fc1.weight").CopyFrom(onnx.numpy_helper.from_array(big, "fc1.weight"))


@pytest.mark.parametrize("edit", [scalar_weight, near_float32_max], ids=lambda f: f.__name__)
def test_odd_but_valid_weights_quantize(tmp_path, capsys, edit):
    model = fixture()
    edit(model)
    path, out = tmp_path / "mutant.onnx", tmp_path / "q.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["quantize", str(path), "--bits", "4", "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""
    for t in onnx.load(str(out)).graph.initializer:
        assert np.all(np.isfinite(onnx.numpy_helper.to_array(t))), t.name


def test_a_failed_verification_leaves_no_output(tmp_path, capsys, monkeypatch):
    import inq_onnx.jobs
    from inq_onnx.errors import VerificationError

    def failing(*args, **kwargs):
        raise VerificationError("ONNX Runtime fails to run the quantized model", "report it")

    monkeypatch.setattr(inq_onnx.jobs, "verify", failing)
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(FIXTURE), "--bits", "4", "-o", str(out)]) == 1
    assert "error: ONNX Runtime fails" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_n1_is_capped_at_the_dtype_largest_power_of_two():
    from inq_onnx import codebook

    for dtype, top in ((np.float32, 127), (np.float16, 15)):
        w = np.array([np.finfo(dtype).max, 1.0, -np.finfo(dtype).max], dtype)
        book = codebook.make_codebook(w, 4)
        assert int(book.n1.reshape(())) == top
        q = codebook.quantize(w, book)
        assert np.all(np.isfinite(q)) and q[0] == 2.0**top and np.all(codebook.in_codebook(q, book))
