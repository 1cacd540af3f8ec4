"""Calling a batcher: ``b(x)``, ``acall``, ``map`` and ``amap`` from threads, event loops and
``async_to_sync`` one-off loops, all sharing one batcher whose worker alone runs the batch function."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync


def test_a_call_returns_the_output_of_its_own_item(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), name="calls")

    assert b(7) == ("out", 7)
    assert b("seven") == ("out", "seven")


def test_a_list_passed_to_call_or_acall_is_one_item_not_many(
    make_batcher: Any, make_gate: Any, loop_thread: Any
) -> None:
    """``b(x)`` treats ``x`` as one item whatever its type: a list is not a bulk request."""
    gate = make_gate(open=True)
    b = make_batcher(gate, name="one-item")

    assert b([1, 2, 3]) == ("out", [1, 2, 3])
    assert loop_thread.run(b.acall((4, 5))) == ("out", (4, 5))
    assert b("abc") == ("out", "abc")

    assert gate.calls == [[[1, 2, 3]], [(4, 5)], ["abc"]]
    assert b.stats.submitted == 3


def test_map_returns_results_in_input_order_even_across_batches(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, max_batch_size=3, max_wait_ms=0, name="ordered")

    assert b.map(range(10)) == [("out", i) for i in range(10)]
    assert gate.items == list(range(10))
    assert gate.sizes == [3, 3, 3, 1]


def test_map_takes_any_iterable_and_each_element_is_one_item(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="iterable")

    assert b.map([i] for i in range(3)) == [("out", [0]), ("out", [1]), ("out", [2])]
    assert gate.calls == [[[0], [1], [2]]]


def test_amap_returns_results_in_input_order(make_batcher: Any, make_gate: Any, loop_thread: Any) -> None:
    gate = make_gate(open=True, is_async=True)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, name="amap")

    assert loop_thread.run(b.amap(["a", "b", "c", "d", "e", "f"])) == [("out", x) for x in "abcdef"]
    assert gate.sizes == [4, 2]


def test_an_empty_map_returns_an_empty_list_without_submitting_anything(
    make_batcher: Any, make_gate: Any, loop_thread: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="empty")

    assert b.map([]) == []
    assert loop_thread.run(b.amap(iter(()))) == []

    assert gate.calls == []
    assert b.stats.submitted == 0
    assert b.stats.batches == 0


def test_sync_callers_on_many_threads_share_a_batch_and_each_gets_its_own_result(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="threads")
    first = spawn(b, "first")
    gate.wait_blocked()  # the worker is busy, so the following calls queue up together

    callers = {i: spawn(b, i) for i in range(20)}
    queued(b, 20)
    gate.open()

    assert first.result() == ("out", "first")
    for i, call in callers.items():
        assert call.result() == ("out", i)
    assert sorted(gate.calls[1]) == list(range(20)), "the queued calls form the next batch"


def test_callers_on_different_loops_threads_and_async_to_sync_share_one_batcher_and_one_batch(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, make_loop: Any
) -> None:
    """ASGI loops, sync threads, ``asyncio.run`` and ``async_to_sync`` one-off loops use one batcher at once."""
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="mixed")
    first = spawn(b, "first")
    gate.wait_blocked()

    loop_a, loop_b = make_loop("asgi-loop-a"), make_loop("asgi-loop-b")
    loop_items = [(("loop", name, i), loop) for name, loop in (("a", loop_a), ("b", loop_b)) for i in range(2)]
    on_loops = [(item, loop.start(b.acall(item))) for item, loop in loop_items]
    on_threads = [spawn(b, ("thread", i)) for i in range(3)]
    one_off = [spawn(async_to_sync(b.acall), ("async_to_sync", i)) for i in range(2)]
    one_off += [spawn(asyncio.run, b.acall(("asyncio.run", i))) for i in range(2)]
    one_off += [spawn(async_to_sync(b.amap), [("async_to_sync-map", 0), ("async_to_sync-map", 1)])]
    queued(b, 4 + 3 + 4 + 2)
    gate.open()

    assert first.result() == ("out", "first")
    for item, call in on_loops:
        assert call.result() == ("out", item)
    assert [c.result() for c in on_threads] == [("out", ("thread", i)) for i in range(3)]
    assert [c.result() for c in one_off] == [
        ("out", ("async_to_sync", 0)),
        ("out", ("async_to_sync", 1)),
        ("out", ("asyncio.run", 0)),
        ("out", ("asyncio.run", 1)),
        [("out", ("async_to_sync-map", 0)), ("out", ("async_to_sync-map", 1))],
    ]
    assert len(gate.calls) == 2, "everything queued behind the first batch went out as one batch"
    assert len(gate.calls[1]) == 13


def test_an_async_batch_function_runs_on_the_batchers_own_loop_never_a_callers(
    make_batcher: Any, make_gate: Any, make_loop: Any
) -> None:
    gate = make_gate(open=True, is_async=True)
    b = make_batcher(gate, max_wait_ms=0, name="own-loop")
    caller_loops = [make_loop("asgi-loop-a"), make_loop("asgi-loop-b")]

    caller_loops[0].run(b.acall(1))
    caller_loops[1].run(b.acall(2))
    assert asyncio.run(b.acall(3)) == ("out", 3)  # a one-off loop that is closed right after
    assert async_to_sync(b.acall)(4) == ("out", 4)
    assert b(5) == ("out", 5)  # a sync caller of an async batch function

    worker_loop = gate.loops[0]
    assert all(loop is worker_loop for loop in gate.loops), "one long-lived loop runs every batch"
    assert all(worker_loop is not lt.loop for lt in caller_loops)
    assert not worker_loop.is_closed()
    assert set(gate.threads) == {"microbatch-own-loop"}


def test_a_sync_batch_function_never_runs_on_a_caller_thread(
    make_batcher: Any, make_gate: Any, loop_thread: Any, spawn: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, max_wait_ms=0, name="worker-only")

    b(1)
    b.map([2, 3])
    loop_thread.run(b.acall(4))
    loop_thread.run(b.amap([5, 6]))
    spawn(b, 7).result()
    async_to_sync(b.acall)(8)

    assert gate.items == [1, 2, 3, 4, 5, 6, 7, 8]
    assert set(gate.threads) == {"microbatch-worker-only"}
