"""Misuse that used to hang or pass silently: options changed after construction, an infinite wait,
and a shutdown stuck behind a batch function that never returns (``close(timeout=...)``)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from microbatch import Batcher, BatcherClosed
from microbatch._options import OPTIONS


def echo(items: list[Any]) -> list[Any]:
    return items


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_is_read_only_after_construction_and_the_error_says_how_to_change_it(name: str) -> None:
    with Batcher(echo, name="fixed") as b:
        before = getattr(b, name)
        with pytest.raises(AttributeError, match=rf"{name} of batcher 'fixed' is read-only: options are fixed at "
                                                 rf"construction; build a new Batcher\({name}=\.\.\.\)"):
            setattr(b, name, 0)
        assert getattr(b, name) == before
        assert b(1) == 1, "the batcher still serves"


def test_max_batch_size_zero_at_run_time_no_longer_reaches_the_worker(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), max_batch_size=4, max_wait_ms=0, name="no-livelock")
    with pytest.raises(AttributeError, match="read-only"):
        b.max_batch_size = 0
    assert b.map([1, 2, 3]) == [("out", 1), ("out", 2), ("out", 3)]


@pytest.mark.parametrize("option", ["max_wait_ms", "aging_ms", "max_queue_delay_ms"])
def test_an_infinite_number_of_milliseconds_is_refused_naming_the_option(option: str) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be None or a finite number of milliseconds >= 0, got inf"):
        options: dict[str, Any] = {option: math.inf}
        Batcher(echo, **options)


def test_close_with_a_timeout_fails_the_queued_and_running_calls_of_a_hung_function(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any, spawn: Any
) -> None:
    gate = make_gate()  # never released while close waits: the batch function hangs
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, name="hung")
    running = hold(b, gate)
    queued = enqueue(b, "q1", ["m1", "m2"])

    b.close(timeout=0.05)  # returns although fn is still stuck

    assert b.closed
    for call in [running, *queued]:
        error = call.exception()
        assert isinstance(error, BatcherClosed), error
        assert "closed with timeout=0.05s before this call finished" in str(error)
    assert b.stats.cancelled == 4 and b.stats.in_flight == 0
    gate.open()  # the stuck call returns at last: its result goes nowhere, nobody gets it twice
    assert len(gate.calls) == 1


def test_aclose_with_a_timeout_does_the_same_without_blocking_the_loop(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any, loop_thread: Any
) -> None:
    gate = make_gate()
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, name="hung-async")
    running = hold(b, gate)
    (queued,) = enqueue(b, "q1")

    loop_thread.run(b.aclose(timeout=0.05))

    assert isinstance(running.exception(), BatcherClosed)
    assert isinstance(queued.exception(), BatcherClosed)
    gate.open()


def test_close_with_a_timeout_that_is_not_needed_drains_as_usual(make_batcher: Any, make_gate: Any,
                                                                  hold: Any, enqueue: Any, spawn: Any) -> None:
    gate = make_gate()
    b = make_batcher(gate, max_wait_ms=0, name="drains")
    running = hold(b, gate)
    (queued,) = enqueue(b, "q")
    closer = spawn(b.close, timeout=30)
    gate.open()
    closer.result()
    assert (running.result(), queued.result()) == (("out", "blocker"), ("out", "q"))


@pytest.mark.parametrize("timeout", [0, -1, True, "1"])
def test_close_refuses_a_bad_timeout(timeout: Any) -> None:
    b = Batcher(echo)
    with pytest.raises((TypeError, ValueError), match="timeout"):
        b.close(timeout=timeout)
    b.close()
