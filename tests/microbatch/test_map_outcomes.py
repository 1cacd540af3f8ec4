"""``map(..., return_exceptions=True)`` and ``amap``: each item whose batch function call failed (after
isolation finds it) gets its exception in its place, the others their results; the map as a whole
fails only for reasons of the map itself (timeout, overload, close)."""

from __future__ import annotations

from typing import Any

import pytest

from microbatch import BatchSizeMismatch, DeadlineExceeded


class Odd(ValueError):
    """Raised for odd items by :func:`evens_only`."""


def evens_only(items: list[int]) -> list[int]:
    bad = [x for x in items if x % 2]
    if bad:
        raise Odd(f"odd items {bad}")
    return [x * 10 for x in items]


def test_each_failed_item_gets_its_own_exception_in_place(make_batcher: Any, make_gate: Any,
                                                          loop_thread: Any) -> None:
    b = make_batcher(make_gate(evens_only, open=True), max_batch_size=8, max_wait_ms=0, name="in-place")

    got = b.map([0, 1, 2, 3, 4], return_exceptions=True)
    agot = loop_thread.run(b.amap([5, 6], return_exceptions=True))

    assert [type(x).__name__ if isinstance(x, Exception) else x for x in got] == [0, "Odd", 20, "Odd", 40]
    assert str(got[1]) == "odd items [1]" and str(got[3]) == "odd items [3]"
    assert got[1] is not got[3], "every item gets its own copy"
    assert isinstance(agot[0], Odd) and agot[1] == 60
    stats = b.stats
    assert (stats.completed, stats.failed) == (4, 3), "failed items count as failed, the rest as completed"


def test_without_return_exceptions_the_first_failure_fails_the_map(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(evens_only, open=True), max_wait_ms=0, name="whole")
    with pytest.raises(Odd):
        b.map([0, 1, 2])


def test_a_wrong_output_count_is_returned_in_place_for_every_item_of_the_call(
    make_batcher: Any, make_gate: Any
) -> None:
    b = make_batcher(make_gate(lambda items: items[:-1], open=True), on_error="fail_batch", max_wait_ms=0,
                     name="short")
    got = b.map(["a", "b"], return_exceptions=True)
    assert [type(x) for x in got] == [BatchSizeMismatch, BatchSizeMismatch]


def test_a_map_that_times_out_still_raises(make_batcher: Any, make_gate: Any, hold: Any) -> None:
    gate = make_gate()
    b = make_batcher(gate, max_wait_ms=0, name="late-map")
    hold(b, gate)
    with pytest.raises(DeadlineExceeded):
        b.map([1, 2], timeout=0.05, return_exceptions=True)
    gate.open()
