"""A test-only hook: stop the process at a named point, so that a test can kill it exactly there.

``INQ_ONNX_TEST_PAUSE_AT=<point>[:<n>]`` makes the n-th time (default: the first) a process
reaches ``pause_point("<point>")`` stop it with SIGSTOP; ``tests/train/test_killed_runs.py``
waits for the stopped process, then sends SIGKILL (or SIGINT and SIGCONT). The points:

    artifacts          training artifacts generated, not yet reported (in the artifacts child)
    step, batch, record    the training loop's events, as it emits them
    checkpoint-write   a checkpoint half written in its temporary folder
    checkpoint-commit  a checkpoint renamed into place, CURRENT not yet pointing to it

The variable is never set outside these tests; then a pause point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "INQ_ONNX_TEST_PAUSE_AT"
_reached: dict[str, int] = {}


def pause_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1) and hasattr(signal, "SIGSTOP"):
        os.kill(os.getpid(), signal.SIGSTOP)
