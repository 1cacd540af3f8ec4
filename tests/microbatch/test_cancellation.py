"""Cancellation: a cancelled ``acall``/``amap`` (its client went away) removes its queued items
before dispatch, and the result of an item already running is dropped silently: nothing is ever
set on a cancelled future, and no error escapes to any event loop or thread.

The ``make_loop`` fixture fails a test whose caller loop reported an unhandled error (its exception
handler), and the autouse ``thread_errors`` fixture one in which a thread died of an exception.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from microbatch import Overloaded


def test_cancelled_acall_and_amap_remove_their_queued_items_which_never_reach_fn(
    make_batcher: Any, gate: Any, queued: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="cancel-queued")
    blocker = hold(b, gate)
    single = loop_thread.start(b.acall("a"))
    bulk = loop_thread.start(b.amap(["m0", "m1"]))
    queued(b, 3)

    single.cancel()
    bulk.cancel()
    single.wait()
    bulk.wait()

    assert single.cancelled and bulk.cancelled
    stats = b.stats
    assert (stats.queue_depth, stats.cancelled, stats.in_flight) == (0, 3, 1)
    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert b("next") == ("out", "next")
    assert gate.calls == [["blocker"], ["next"]]


def test_a_client_side_timeout_around_acall_cancels_it_and_removes_its_item(
    make_batcher: Any, gate: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="wait-for")
    hold(b, gate)

    with pytest.raises(TimeoutError):
        loop_thread.run(asyncio.wait_for(b.acall("given-up"), 0.05))

    assert (b.stats.cancelled, b.stats.queue_depth) == (1, 0)
    gate.open()
    assert b("next") == ("out", "next")
    assert "given-up" not in gate.items


def test_a_cancelled_amap_already_partly_running_never_sends_its_remaining_items(
    make_batcher: Any, gate: Any, loop_thread: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, name="cancel-partial")
    bulk = loop_thread.start(b.amap([f"m{i}" for i in range(5)]))
    gate.wait_blocked()  # the first two items are running, three are queued

    bulk.cancel()
    bulk.wait()

    assert bulk.cancelled
    assert b.stats.queue_depth == 0
    gate.open()
    assert b("next") == ("out", "next")
    assert gate.calls == [["m0", "m1"], ["next"]]
    assert b.stats.cancelled == 5


def test_cancelling_frees_its_room_in_the_queue(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_batch_size=1, max_queue_size=2, max_wait_ms=0, name="cancel-room")
    hold(b, gate)
    waiting = spawn(b, "waiting")
    leaving = loop_thread.start(b.acall("leaving"))
    queued(b, 2)
    with pytest.raises(Overloaded):
        b("refused")

    leaving.cancel()
    leaving.wait()
    admitted = spawn(b, "admitted")
    queued(b, 2)
    gate.open()

    assert waiting.result() == ("out", "waiting")
    assert admitted.result() == ("out", "admitted")


def fails_on_gone(items: list[Any]) -> list[Any]:
    if "gone" in items:
        raise ValueError("the model failed")
    return [("out", x) for x in items]


def short_on_gone(items: list[Any]) -> list[Any]:
    out = [("out", x) for x in items]
    return out[:-1] if "gone" in items else out


@pytest.mark.parametrize(
    "process", [None, fails_on_gone, short_on_gone], ids=["result", "exception", "wrong-length"]
)
def test_the_outcome_of_a_cancelled_caller_whose_item_is_running_is_dropped_silently(
    make_batcher: Any, make_gate: Any, loop_thread: Any, process: Any, is_async: bool, thread_errors: Any
) -> None:
    gate = make_gate(process, is_async=is_async) if process else make_gate(is_async=is_async)
    b = make_batcher(gate, max_wait_ms=0, on_error="fail_batch", name="cancel-running")
    gone = loop_thread.start(b.acall("gone"))
    gate.wait_blocked()

    gone.cancel()
    gone.wait()
    assert gone.cancelled
    gate.open()  # the batch finishes after its caller left

    assert loop_thread.run(b.acall("next")) == ("out", "next")
    gc.collect()  # a future holding an unretrieved exception would complain when collected
    loop_thread.run(asyncio.sleep(0))
    assert loop_thread.errors == []
    assert thread_errors == []
    assert gate.calls == [["gone"], ["next"]]
    stats = b.stats
    assert (stats.cancelled, stats.completed, stats.failed, stats.in_flight) == (1, 1, 0, 0)


def test_many_cancellations_never_stall_the_worker_or_lose_a_caller(
    make_batcher: Any, gate: Any, queued: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, name="cancel-many")
    blocker = hold(b, gate)
    calls = [loop_thread.start(b.acall(i)) for i in range(40)]
    queued(b, 40)

    for call in calls[::2]:
        call.cancel()
    for call in calls[::2]:
        call.wait()
    queued(b, 20)
    gate.open()

    assert blocker.result() == ("out", "blocker")
    for i, call in enumerate(calls):
        call.wait()
        assert call.cancelled if i % 2 == 0 else call.result() == ("out", i)
    assert sorted(x for x in gate.items if x != "blocker") == list(range(1, 40, 2))
    stats = b.stats
    assert (stats.cancelled, stats.completed, stats.in_flight) == (20, 21, 0)
