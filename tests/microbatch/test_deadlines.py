"""Deadlines: a ``timeout`` (or the ambient ``microbatch.deadline()``) raises ``DeadlineExceeded``
when it passes, and an expired item is never sent to the batch function.

The worker is held in a gate, so a short real timeout is sure to pass before anything runs; the
tests assert on what the callers got and what the batch function saw, never on durations. Expiry
that the engine itself detects at dispatch is driven by the frozen engine clock (``fake_clock``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

import microbatch
from microbatch import DeadlineExceeded

SHORT = 0.05  # seconds: passes while the worker is held in the gate
# Long enough for an idle worker to pick a call up before it passes, even on a loaded machine.
PICKUP = 0.5


def under_deadline(seconds: float | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with microbatch.deadline(seconds):
        return fn(*args, **kwargs)


def test_a_timeout_that_passes_while_queued_raises_deadline_exceeded_and_the_item_never_reaches_fn(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="expire-queued")
    blocker = hold(b, gate)

    error = spawn(b, "late", timeout=SHORT).exception()  # the gate is still closed
    assert isinstance(error, DeadlineExceeded) and isinstance(error, TimeoutError)
    assert "before it was dispatched" in str(error)
    assert (b.stats.expired, b.stats.queue_depth) == (1, 0)

    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert b("next") == ("out", "next")
    assert "late" not in gate.items


def test_acall_and_amap_timeouts_raise_deadline_exceeded_and_their_items_never_reach_fn(
    make_batcher: Any, gate: Any, spawn: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="expire-async")
    hold(b, gate)

    with pytest.raises(DeadlineExceeded):
        loop_thread.run(b.acall("late", timeout=SHORT))
    with pytest.raises(DeadlineExceeded, match="map of 2 items"):
        loop_thread.run(b.amap(["m0", "m1"], timeout=SHORT))
    with pytest.raises(DeadlineExceeded):
        spawn(b.map, ["s0", "s1"], timeout=SHORT).result()
    assert b.stats.expired == 5

    gate.open()
    assert b("next") == ("out", "next")
    assert gate.items == ["blocker", "next"]


def test_an_item_whose_deadline_passed_in_the_queue_is_dropped_at_dispatch(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, fake_clock: Any, hold: Any
) -> None:
    """The engine checks deadlines when it forms a batch, not only when the caller's own wait ends."""
    b = make_batcher(gate, max_wait_ms=0, name="expire-at-dispatch")
    hold(b, gate)
    stale = spawn(b, "stale", timeout=60)  # its caller would wait a real minute
    fresh = spawn(b, "fresh", timeout=120)
    queued(b, 2)

    fake_clock.advance(90)
    gate.open()

    assert isinstance(stale.exception(), DeadlineExceeded)
    assert fresh.result() == ("out", "fresh")
    assert gate.calls == [["blocker"], ["fresh"]]


def test_a_timeout_that_passes_while_the_batch_runs_raises_and_the_late_result_is_dropped(
    make_batcher: Any, gate: Any, spawn: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="expire-running")

    slow = spawn(b, "slow", timeout=PICKUP)
    gate.wait_blocked()
    error = slow.exception()  # while the batch function still holds the item
    assert isinstance(error, DeadlineExceeded)
    assert "while it ran" in str(error)

    gate.open()
    assert b("next") == ("out", "next")
    stats = b.stats
    assert (stats.expired, stats.completed, stats.in_flight) == (1, 1, 0)


def test_items_that_expire_during_error_isolation_are_not_retried(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, fake_clock: Any, hold: Any
) -> None:
    """Bisection re-checks deadlines before each retry: an expired item never goes back to ``fn``."""

    def slow_failure(items: list[Any]) -> list[Any]:
        if "bad" in items:
            fake_clock.advance(30)
            raise ValueError("bad item")
        return [("out", x) for x in items]

    gate = make_gate(slow_failure)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, name="expire-isolating")
    hold(b, gate)
    urgent = spawn(b, "urgent", timeout=20)
    bad = spawn(b, "bad")
    patient = spawn(b, "patient", timeout=1000)
    queued(b, 3)
    gate.open()

    assert isinstance(urgent.exception(), DeadlineExceeded), "the failed run took 30 s of its 20 s"
    assert isinstance(bad.exception(), ValueError)
    assert patient.result() == ("out", "patient")
    assert gate.calls[1] == ["urgent", "bad", "patient"]
    assert all("urgent" not in call for call in gate.calls[2:])
    assert b.stats.expired == 1


@pytest.mark.parametrize(
    ("timeout", "error", "says"),
    [
        (0, ValueError, r"number of seconds > 0, got 0"),
        (-1, ValueError, r"> 0, got -1"),
        (-1.5, ValueError, r"> 0, got -1.5"),
        (math.nan, ValueError, r"got nan"),
        (math.inf, ValueError, r"got inf \(finite: None means no limit\)"),
        (True, TypeError, r"number of seconds, got bool True"),
        ("1", TypeError, r"number of seconds, got str '1'"),
    ],
)
def test_a_per_call_timeout_follows_the_options_rules_and_a_mistake_enqueues_nothing(
    make_batcher: Any, make_gate: Any, loop_thread: Any, timeout: Any, error: type[Exception], says: str
) -> None:
    """A timeout of 0 or less, NaN, infinity, a bool or a string per call is a mistake (as in
    ``Batcher(timeout=...)``), not "no time left": the message names the rule and microbatch.deadline()."""
    gate = make_gate(open=True)
    b = make_batcher(gate, name="bad-timeout")

    calls: list[Callable[[], Any]] = [
        lambda: b("x", timeout=timeout), lambda: b.map(["x", "y"], timeout=timeout),
        lambda: loop_thread.run(b.acall("x", timeout=timeout)), lambda: loop_thread.run(b.amap(["x"], timeout=timeout)),
    ]
    for call in calls:
        with pytest.raises(error, match=says) as raised:
            call()
        assert "microbatch.deadline()" in str(raised.value)

    assert b.stats.submitted == 0
    assert gate.calls == []
    assert b("x", timeout=1) == ("out", "x"), "an int number of seconds is fine"


def test_an_ambient_deadline_that_has_passed_is_no_time_left_even_with_a_valid_timeout(
    make_batcher: Any, make_gate: Any, loop_thread: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="no-time")

    with microbatch.deadline(0):
        with pytest.raises(DeadlineExceeded, match="no time left"):
            b("x", timeout=5)
        with pytest.raises(DeadlineExceeded):
            b.map(["x", "y"])
        with pytest.raises(DeadlineExceeded):
            loop_thread.run(b.amap(["x"], timeout=5))

    assert b.stats.submitted == 0
    assert gate.calls == []


@pytest.mark.parametrize("kind", ["call", "map", "acall", "amap"])
def test_every_kind_of_call_inside_a_deadline_block_honours_it(
    make_batcher: Any, gate: Any, spawn: Any, loop_thread: Any, kind: str, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name=f"ambient-{kind}")
    hold(b, gate)

    async def in_a_task() -> Any:
        with microbatch.deadline(SHORT):
            return await (b.acall("x") if kind == "acall" else b.amap(["x", "y"]))

    if kind in ("call", "map"):
        fn, arg = (b, "x") if kind == "call" else (b.map, ["x", "y"])
        error = spawn(under_deadline, SHORT, fn, arg).exception()
    else:
        with pytest.raises(DeadlineExceeded) as caught:
            loop_thread.run(in_a_task())
        error = caught.value
    assert isinstance(error, DeadlineExceeded)
    gate.open()
    assert gate.items == ["blocker"]


def test_the_earlier_of_the_ambient_deadline_and_the_call_timeout_wins(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="earlier-wins")
    hold(b, gate)

    assert isinstance(spawn(under_deadline, 60, b, "a", timeout=SHORT).exception(), DeadlineExceeded)
    assert isinstance(spawn(under_deadline, SHORT, b, "b", timeout=60).exception(), DeadlineExceeded)
    assert isinstance(spawn(under_deadline, SHORT, under_deadline, 60, b, "c").exception(), DeadlineExceeded), (
        "a nested block keeps the outer, earlier deadline"
    )
    gate.open()
    assert gate.items == ["blocker"]


def test_a_deadline_of_none_adds_no_limit_and_the_block_does_not_outlive_its_scope(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="no-limit")
    hold(b, gate)

    def after_a_block() -> Any:
        with microbatch.deadline(SHORT):
            pass
        return b("after")

    unlimited = spawn(under_deadline, None, b, "unlimited")
    after = spawn(after_a_block)
    queued(b, 2)
    gate.open()

    assert unlimited.result() == ("out", "unlimited")
    assert after.result() == ("out", "after")


def test_an_expired_ambient_deadline_raises_at_once_and_enqueues_nothing(
    make_batcher: Any, make_gate: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="spent")

    with microbatch.deadline(0):
        with pytest.raises(DeadlineExceeded):
            b("x")
    assert b.stats.submitted == 0


@pytest.mark.parametrize("seconds", [-1, math.nan])
def test_a_deadline_needs_a_number_of_seconds_of_zero_or_more(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        with microbatch.deadline(seconds):
            pass


def test_the_ambient_deadline_follows_await_into_tasks_created_inside_the_block(
    make_batcher: Any, gate: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="task-context")
    hold(b, gate)

    async def fan_out() -> list[BaseException | Any]:
        with microbatch.deadline(SHORT):
            tasks = [asyncio.create_task(b.acall(i)) for i in range(3)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = loop_thread.run(fan_out())
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    gate.open()
    assert gate.items == ["blocker"]


@pytest.mark.parametrize("kind", ["call", "map", "acall", "amap"])
def test_the_batchers_default_timeout_applies_to_every_call_that_passes_none(
    make_batcher: Any, gate: Any, spawn: Any, loop_thread: Any, kind: str
) -> None:
    b = make_batcher(gate, max_wait_ms=0, timeout=SHORT, name=f"default-timeout-{kind}")
    blocker = spawn(b, "blocker", timeout=60)  # a per-call timeout replaces the default
    gate.wait_blocked()

    if kind in ("call", "map"):
        error = spawn(b if kind == "call" else b.map, "x" if kind == "call" else ["x", "y"]).exception()
    else:
        with pytest.raises(DeadlineExceeded) as caught:
            loop_thread.run(b.acall("x") if kind == "acall" else b.amap(["x", "y"]))
        error = caught.value
    assert isinstance(error, DeadlineExceeded)

    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert gate.items == ["blocker"]
