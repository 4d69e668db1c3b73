"""Sigma schedules: the paper's presets and parsing of --schedule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inq_onnx.errors import InvalidOptionError
from inq_onnx.schedule import LRDecay, LRSchedule, check_schedule, default_schedule, format_schedule, parse_schedule


def test_schedule_module_imports_no_onnx():
    import inq_onnx.schedule as module

    assert not re.search(r"^\s*(import|from)\s+onnx", Path(module.__file__).read_text(), re.MULTILINE)


@pytest.mark.parametrize(
    "bits, expected",
    [
        (5, (0.5, 0.75, 0.875, 1.0)),
        (4, (0.3, 0.5, 0.8, 0.9, 0.95, 1.0)),
        (3, (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)),
        (2, (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0)),
        (6, (0.5, 0.75, 0.875, 1.0)),
        (8, (0.5, 0.75, 0.875, 1.0)),
    ],
)
def test_default_schedules_are_the_papers(bits, expected):
    assert default_schedule(bits) == expected
    assert check_schedule(expected) == expected


@pytest.mark.parametrize("bits", [1, 9, 4.0, True, "4"])
def test_default_schedule_rejects_bad_bits(bits):
    with pytest.raises(InvalidOptionError, match="To fix this"):
        default_schedule(bits)


def test_parse_accepts_spaces_and_integers():
    assert parse_schedule(" 0.5, 0.75 ,0.875,1") == (0.5, 0.75, 0.875, 1.0)
    assert parse_schedule("1") == (1.0,)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "not a number"),
        ("0.5,,1", "not a number"),
        ("0.5;1", "not a number"),
        ("half,1", "not a number"),
        ("nan,1", "not a number"),
        ("0.5,inf", "not a number"),
        ("0,0.5,1", r"outside \(0, 1\]"),
        ("-0.1,1", r"outside \(0, 1\]"),
        ("0.5,1.5", r"outside \(0, 1\]"),
        ("0.5,0.5,1", "not strictly increasing"),
        ("0.75,0.5,1", "not strictly increasing"),
        ("0.5,0.75", "not 1"),
        ("0.5,0.999999", "not 1"),
    ],
)
def test_parse_rejects_with_a_one_line_fix(text, problem):
    with pytest.raises(InvalidOptionError, match=problem) as info:
        parse_schedule(text)
    message = str(info.value)
    assert "To fix this, " in message and "\n" not in message


def test_check_rejects_empty_and_non_numbers():
    with pytest.raises(InvalidOptionError, match="empty"):
        check_schedule([])
    with pytest.raises(InvalidOptionError, match="not a number"):
        check_schedule(["0.5", 1.0])


@given(st.lists(st.floats(min_value=1e-6, max_value=0.999999), min_size=0, max_size=12, unique=True))
def test_any_increasing_schedule_round_trips_through_text(inner):
    sigmas = tuple(sorted(inner)) + (1.0,)
    assert parse_schedule(format_schedule(sigmas)) == sigmas


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8))
def test_check_accepts_exactly_the_valid_schedules(values):
    valid = (
        all(0.0 < v <= 1.0 for v in values)
        and all(b > a for a, b in zip(values, values[1:]))
        and values[-1] == 1.0
    )
    if valid:
        assert check_schedule(values) == tuple(values)
    else:
        with pytest.raises(InvalidOptionError):
            check_schedule(values)


def test_lr_schedules():
    assert LRSchedule(0.01).at(0.7) == 0.01
    step = LRSchedule(0.01, LRDecay.STEP, milestones=(0.5, 0.75))
    assert [step.at(p) for p in (0.0, 0.49, 0.5, 0.8)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    cosine = LRSchedule(0.02, "cosine")
    assert cosine.at(0.0) == 0.02 and cosine.at(0.5) == pytest.approx(0.01) and cosine.at(1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        LRSchedule(0.0)
