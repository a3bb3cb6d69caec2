"""A Ctrl-C swallowed where Python ignores exceptions (a finaliser) still stops the run at the next round."""

from __future__ import annotations

import gc
import os
import signal

import pytest

from livar_bench import interrupt
from livar_bench.config import make_spec
from livar_bench.federation import run_federation


@pytest.fixture
def handler():
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt.install()
    yield
    signal.signal(signal.SIGINT, before)
    interrupt._interrupted.clear()


class _SwallowsInterrupt:
    """Its finaliser receives the SIGINT; Python prints "Exception ignored" and goes on."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs between bytecodes, here, inside __del__
            pass


def test_a_sigint_swallowed_by_a_finaliser_stops_the_run_at_its_next_round(handler, tiny_spec_values, tmp_path):
    obj = _SwallowsInterrupt()
    del obj
    gc.collect()  # nothing was raised here: Python swallowed the KeyboardInterrupt in __del__
    spec = make_spec({**tiny_spec_values, "method": "fedavg", "rounds": 2})
    with pytest.raises(KeyboardInterrupt):
        run_federation(spec, tmp_path)
    assert not (tmp_path / "runs" / spec.run_id / "metrics.csv").exists()  # the run is not marked done


def test_without_a_sigint_the_run_is_not_interrupted(handler, tiny_spec_values, tmp_path):
    outcome = run_federation(make_spec({**tiny_spec_values, "method": "fedavg", "rounds": 1}), tmp_path)
    assert "acc" in outcome.final


def test_install_keeps_raising_keyboardinterrupt(handler):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1_000_000):
            pass
    with pytest.raises(KeyboardInterrupt):
        interrupt.check()
