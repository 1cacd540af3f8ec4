"""Coalescing (``coalesce=True`` or a key function): identical items queued or running at the same
time are computed once, and every caller gets the result, its own copy where it is mutable
(``copy.deepcopy``) or its own copy of the exception. A caller that leaves does not cancel the shared
computation for the others; when every caller has left, the item is never computed.

Each test holds the worker in a gate so that the identical calls are in flight together, then reads
from ``gate.calls`` what the batch function was actually given.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from microbatch import Batcher, BatcherClosed, DeadlineExceeded, MicrobatchError, Stats


def until_stats(b: Batcher[Any, Any], check: Callable[[Stats], bool], what: str, wait_until: Any) -> None:
    wait_until(lambda: check(b.stats), f"{what} (stats: {b.stats})")


def test_identical_queued_items_are_computed_once_and_every_caller_gets_the_result(
    make_batcher: Any, gate: Any, enqueue: Any, spawn: Any, hold: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="dedupe")
    blocker = hold(b, gate)
    calls = enqueue(b, "a", "b")
    # Two more callers of "a" join the queued computation: the queue does not grow.
    calls += [spawn(b, "a"), spawn(b, "a")]
    until_stats(b, lambda s: s.coalesced == 2, "both joined", wait_until)
    assert b.stats.queue_depth == 2

    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert [call.result() for call in calls] == [("out", "a"), ("out", "b"), ("out", "a"), ("out", "a")]
    assert gate.calls == [["blocker"], ["a", "b"]]
    stats = b.stats
    assert (stats.submitted, stats.completed, stats.coalesced, stats.in_flight) == (5, 5, 2, 0)


def test_an_item_identical_to_one_already_running_joins_it_instead_of_running_again(
    make_batcher: Any, gate: Any, spawn: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="join-running")
    running = spawn(b, "a")
    gate.wait_blocked()  # "a" is inside the batch function
    late = spawn(b, "a")
    until_stats(b, lambda s: s.coalesced == 1, "the late caller joined", wait_until)
    assert b.stats.queue_depth == 0

    gate.open()
    assert (running.result(), late.result()) == (("out", "a"), ("out", "a"))
    assert gate.calls == [["a"]]
    # Once settled, the key leaves the table: the same item later is computed afresh.
    assert b("a") == ("out", "a") and gate.calls == [["a"], ["a"]]


def test_every_caller_gets_its_own_copy_of_a_mutable_result(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(lambda items: [{"item": x, "vector": [1.0, 2.0]} for x in items])
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="mutable")
    calls = [spawn(b, "a")]
    gate.wait_blocked()
    calls += [spawn(b, "a"), spawn(b.map, ["a", "a"])]
    until_stats(b, lambda s: s.coalesced == 3, "three more subscriptions", wait_until)
    gate.open()
    one, two, (three, four) = (call.result() for call in calls)

    results = [one, two, three, four]
    assert all(r == {"item": "a", "vector": [1.0, 2.0]} for r in results)
    assert len({id(r) for r in results}) == 4 and len({id(r["vector"]) for r in results}) == 4
    one["vector"].append(99.0)
    assert two["vector"] == three["vector"] == four["vector"] == [1.0, 2.0]


def test_numpy_results_are_copies_never_views_of_one_array(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(lambda items: np.arange(len(items) * 3, dtype=np.float32).reshape(len(items), 3))
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="arrays")
    first = spawn(b, "text")
    gate.wait_blocked()
    second = spawn(b, "text")
    until_stats(b, lambda s: s.coalesced == 1, "the second joined", wait_until)
    gate.open()
    x, y = first.result(), second.result()
    np.testing.assert_array_equal(x, y)
    assert not np.shares_memory(x, y)


def test_immutable_results_are_shared_as_deepcopy_returns_them(
    make_batcher: Any, gate: Any, spawn: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="immutable")
    first = spawn(b, "a")
    gate.wait_blocked()
    second = spawn(b, "a")
    until_stats(b, lambda s: s.coalesced == 1, "the second joined", wait_until)
    gate.open()
    # ("out", "a") is a tuple of strings: copy.deepcopy returns it as it is, and sharing it is safe.
    assert first.result() is second.result()


def test_a_cancelled_first_caller_does_not_cancel_the_computation_for_the_others(
    make_batcher: Any, gate: Any, loop_thread: Any, spawn: Any, hold: Any, queued: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="leader-leaves")
    hold(b, gate)
    leader = loop_thread.start(b.acall("a"))
    queued(b, 1)
    follower = spawn(b, "a")
    until_stats(b, lambda s: s.coalesced == 1, "the follower joined", wait_until)

    leader.cancel()
    leader.wait()
    assert leader.cancelled and b.stats.queue_depth == 1, "the shared item stays queued"
    gate.open()
    assert follower.result() == ("out", "a")
    assert gate.calls == [["blocker"], ["a"]]
    stats = b.stats
    assert (stats.cancelled, stats.completed, stats.in_flight) == (1, 2, 0)


def test_an_expired_caller_does_not_cancel_the_computation_for_the_others(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any, queued: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="leader-expires")
    hold(b, gate)
    hurried = spawn(b, "a", timeout=0.05)  # the worker is held: it cannot finish in time
    queued(b, 1)
    patient = spawn(b, "a")
    until_stats(b, lambda s: s.coalesced == 1, "the patient caller joined", wait_until)

    with pytest.raises(DeadlineExceeded, match="coalesced"):
        hurried.result()
    gate.open()
    assert patient.result() == ("out", "a")
    assert gate.items == ["blocker", "a"]
    assert (b.stats.expired, b.stats.completed) == (1, 2)


def test_when_every_caller_of_an_item_has_left_it_is_never_computed(
    make_batcher: Any, gate: Any, loop_thread: Any, hold: Any, queued: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="all-leave")
    hold(b, gate)
    callers = [loop_thread.start(b.acall("a")), loop_thread.start(b.acall("a"))]
    until_stats(b, lambda s: s.coalesced == 1 and s.queue_depth == 1, "both are in", wait_until)
    for caller in callers:
        caller.cancel()
        caller.wait()
    queued(b, 0)
    gate.open()
    assert b("b") == ("out", "b")
    assert gate.calls == [["blocker"], ["b"]]
    assert b.stats.cancelled == 2


def test_an_error_reaches_every_coalesced_caller_each_with_its_own_exception(
    make_batcher: Any, make_gate: Any, spawn: Any, hold: Any, queued: Any, wait_until: Any
) -> None:
    def model(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ValueError("cannot embed 'bad'")
        return [("out", x) for x in items]

    gate = make_gate(model)
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="shared-error")
    hold(b, gate)
    bad = [spawn(b, "bad") for _ in range(3)]
    good = spawn(b, "good")
    until_stats(b, lambda s: s.coalesced == 2 and s.queue_depth == 2, "all are in", wait_until)
    gate.open()

    errors = [call.exception() for call in bad]
    assert all(isinstance(e, ValueError) and str(e) == "cannot embed 'bad'" for e in errors)
    assert len({id(e) for e in errors}) == 3, "each caller raises its own copy"
    assert good.result() == ("out", "good"), "isolation still spares the good item"
    assert gate.items.count("bad") == 2, "the bad item ran once per bisection step, never once per caller"
    assert (b.stats.failed, b.stats.completed) == (3, 2)


def test_a_map_with_repeated_items_computes_each_once_and_keeps_input_order(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(lambda items: [[x] for x in items], open=True)
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="map-dupes")
    result = b.map(["a", "b", "a", "c", "b"])
    assert result == [["a"], ["b"], ["a"], ["c"], ["b"]]
    assert result[0] is not result[2], "a mutable result is copied even within one map"
    assert gate.calls == [["a", "b", "c"]] and b.stats.coalesced == 2


def test_a_key_function_decides_what_is_identical(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(lambda items: [item["text"].upper() for item in items])
    b = make_batcher(gate, max_wait_ms=0, coalesce=lambda item: item["text"], name="keyed")
    first = spawn(b, {"text": "hi", "request_id": 1})
    gate.wait_blocked()
    second = spawn(b, {"text": "hi", "request_id": 2})  # a dict is unhashable: the key makes it coalesce
    until_stats(b, lambda s: s.coalesced == 1, "the same text joined", wait_until)
    gate.open()
    assert (first.result(), second.result()) == ("HI", "HI") and len(gate.calls) == 1


def test_equal_items_of_different_types_are_not_coalesced(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(lambda items: [type(x).__name__ for x in items], open=True)
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="typed")
    assert b.map([1, 1.0, True]) == ["int", "float", "bool"]
    assert b.stats.coalesced == 0


def test_an_unhashable_item_is_a_type_error_saying_to_pass_a_key_function(make_batcher: Any, gate: Any) -> None:
    b = make_batcher(gate, coalesce=True, name="unhashable")
    needs_key = r"coalesce=True needs hashable items.*got an unhashable list.*pass coalesce=<a function"
    with pytest.raises(TypeError, match=needs_key):
        b([1, 2])
    with pytest.raises(TypeError, match="unhashable ndarray"):
        b.map([np.zeros(3)])
    assert b.stats.submitted == 0 and b.stats.queue_depth == 0


def test_a_key_function_returning_an_unhashable_key_is_a_type_error(make_batcher: Any, gate: Any) -> None:
    b = make_batcher(gate, coalesce=lambda item: [item], name="bad-key")
    with pytest.raises(TypeError, match="key function of batcher 'bad-key' returned an unhashable list"):
        b("a")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_coalesce_must_be_a_flag_or_a_key_function(make_batcher: Any, value: Any) -> None:
    with pytest.raises(TypeError, match="coalesce must be True, False or a function"):
        make_batcher(lambda xs: xs, coalesce=value)


def test_a_result_deepcopy_cannot_copy_fails_only_the_extra_callers(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(lambda items: [threading.Lock() for _ in items])
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="uncopyable")
    first = spawn(b, "a")
    gate.wait_blocked()
    second = spawn(b, "a")
    until_stats(b, lambda s: s.coalesced == 1, "the second joined", wait_until)
    gate.open()
    assert isinstance(first.result(), type(threading.Lock()))
    with pytest.raises(MicrobatchError, match="cannot copy the result.*turn coalesce off"):
        second.result()


def test_close_without_drain_fails_every_coalesced_caller(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, coalesce=True, name="dropped")
    hold(b, gate)
    callers = [spawn(b, "a"), spawn(b, "a"), spawn(b.map, ["a", "b"])]
    until_stats(b, lambda s: s.submitted == 5 and s.coalesced == 2, "all are in", wait_until)
    closer = spawn(b.close, drain=False)
    errors = [call.exception() for call in callers]
    assert all(isinstance(e, BatcherClosed) for e in errors) and len({id(e) for e in errors}) == 3
    gate.open()
    closer.result()
    assert gate.calls == [["blocker"]]
    assert (b.stats.cancelled, b.stats.in_flight) == (4, 0)


def test_coalescing_works_with_concurrent_batches(make_batcher: Any, loop_thread: Any) -> None:
    """A soak: 200 async callers drawing from 10 distinct items, 4 batches in flight; everyone gets the
    right result, and far fewer items are computed than were asked for."""
    computed: list[int] = []

    async def model(items: list[int]) -> list[list[int]]:
        computed.extend(items)
        return [[x, x * x] for x in items]

    b = make_batcher(model, max_batch_size=4, max_wait_ms=0, max_concurrent_batches=4, coalesce=True, name="both")

    async def main() -> list[Any]:
        return await asyncio.gather(*(b.acall(i % 10) for i in range(200)))

    results = loop_thread.run(main())
    assert results == [[i % 10, (i % 10) ** 2] for i in range(200)]
    stats = b.stats
    assert stats.completed == 200 and stats.coalesced == 200 - len(computed) and stats.in_flight == 0


def test_a_map_with_return_exceptions_gets_each_coalesced_items_error_in_its_place(
    make_batcher: Any, make_gate: Any
) -> None:
    def model(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ValueError("cannot embed 'bad'")
        return [("out", x) for x in items]

    b = make_batcher(make_gate(model, open=True), max_wait_ms=0, coalesce=True, name="map-errors")
    first, good, second = b.map(["bad", "good", "bad"], return_exceptions=True)
    assert good == ("out", "good")
    assert isinstance(first, ValueError) and isinstance(second, ValueError) and first is not second
    stats = b.stats
    assert (stats.coalesced, stats.failed, stats.completed) == (1, 2, 1)
