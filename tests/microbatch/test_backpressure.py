"""Backpressure: at most ``max_queue_size`` items wait; a call that would exceed it raises
``Overloaded`` at once with nothing enqueued (a map is admitted whole or not at all), carrying a
``retry_after`` estimate; a map that could never fit raises ``ValueError``."""

from __future__ import annotations

from typing import Any

import pytest

from microbatch import Overloaded


def test_a_call_beyond_max_queue_size_raises_overloaded_at_once_and_enqueues_nothing(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_queue_size=4, max_wait_ms=0, name="full-queue")
    accepted = [hold(b, gate), *enqueue(b, *range(4))]

    # The gate is still closed: had the call been queued, it would be blocked now, not failed.
    error = spawn(b, "extra").exception()
    assert isinstance(error, Overloaded)
    assert "max_queue_size=4" in str(error)
    assert isinstance(error.retry_after, float) and error.retry_after > 0
    stats = b.stats
    assert (stats.queue_depth, stats.rejected, stats.submitted) == (4, 1, 5)

    gate.open()
    assert [c.result() for c in accepted] == [("out", "blocker")] + [("out", i) for i in range(4)]
    assert "extra" not in gate.items
    assert b("after") == ("out", "after"), "a rejection leaves the batcher serving"


def test_a_map_is_admitted_whole_or_not_at_all(
    make_batcher: Any, gate: Any, loop_thread: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_queue_size=4, max_wait_ms=0, name="whole-map")
    accepted = [hold(b, gate), *enqueue(b, *range(2))]

    with pytest.raises(Overloaded):
        b.map(["m0", "m1", "m2"])  # 2 queued + 3 > 4
    with pytest.raises(Overloaded):
        loop_thread.run(b.amap(["a0", "a1", "a2"]))
    assert b.stats.queue_depth == 2, "no part of a refused map was queued"
    assert b.stats.rejected == 6

    (fits,) = enqueue(b, ["f0", "f1"])  # exactly fills the queue
    gate.open()

    assert fits.result() == [("out", "f0"), ("out", "f1")]
    for call in accepted:
        call.result()
    assert not {"m0", "m1", "m2", "a0", "a1", "a2"} & set(gate.items)


def test_a_map_larger_than_max_queue_size_raises_value_error_naming_the_limit(
    make_batcher: Any, make_gate: Any, loop_thread: Any
) -> None:
    """Such a map could never be admitted, so retrying is pointless: it is an error, not overload."""
    gate = make_gate(open=True)
    b = make_batcher(gate, max_batch_size=2, max_queue_size=4, name="too-big")

    with pytest.raises(ValueError, match=r"5 items.*max_queue_size=4"):
        b.map(range(5))
    with pytest.raises(ValueError, match="max_queue_size"):
        loop_thread.run(b.amap(range(5)))

    assert b.stats.submitted == 0
    assert gate.calls == []
    assert b.map(range(4)) == [("out", i) for i in range(4)]


def test_retry_after_estimates_when_the_queue_has_room_from_the_measured_cost_of_a_batch(
    make_batcher: Any, make_gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    """A full batch of 2 takes 0.1 s, so room for 1 item comes in 0.1 s and room for 4 in 0.2 s."""

    def one_tenth_of_a_second(items: list[Any]) -> list[Any]:
        fake_clock.advance(0.100)
        return [("out", x) for x in items]

    gate = make_gate(one_tenth_of_a_second)
    b = make_batcher(gate, max_batch_size=2, max_queue_size=4, max_wait_ms=0, name="retry-after")
    gate.release()
    assert b.map(["w", "x"]) == [("out", "w"), ("out", "x")]
    accepted = [hold(b, gate), *enqueue(b, *range(4))]

    with pytest.raises(Overloaded) as one:
        b("one more")
    with pytest.raises(Overloaded) as four:
        b.map(["a", "b", "c", "d"])

    assert one.value.retry_after == pytest.approx(0.1)
    assert four.value.retry_after == pytest.approx(0.2)
    gate.open()
    for call in accepted:
        call.result()
