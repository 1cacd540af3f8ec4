"""When a batch is dispatched: at once when the worker is idle, with whatever queued while it was
busy, never waiting with ``max_wait_ms=0``, up to a bound counted from the oldest arrival with a
positive ``max_wait_ms``, and, adaptively, only when the measured cost model says company pays.

Tests that depend on time freeze the engine's clock (``fake_clock``): on a frozen clock a wait never
ends by itself, so a batch's composition shows exactly what the engine waited for.
"""

from __future__ import annotations

from typing import Any

import pytest

from microbatch import Batcher


def costly(gate_factory: Any, clock: Any, seconds: float, is_async: bool) -> Any:
    """An open gate whose every call takes ``seconds`` of the frozen engine clock (a fixed cost per call)."""

    def process(items: list[Any]) -> list[Any]:
        clock.advance(seconds)
        return [("out", x) for x in items]

    return gate_factory(process, open=True, is_async=is_async)


def test_a_lone_call_on_an_idle_batcher_is_dispatched_at_once(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, is_async: bool
) -> None:
    """Even with a measured fixed cost per call, a lone request after a quiet spell is not held for company."""
    gate = costly(make_gate, fake_clock, 0.010, is_async)
    b = make_batcher(gate, max_batch_size=8, name="lone")
    # Batches of two sizes costing the same: the fit finds a fixed cost (batches of one size alone
    # cannot tell fixed from per-item cost, and the policy then assumes no fixed cost).
    assert b.map(range(8)) == [("out", i) for i in range(8)]
    for i in range(2):
        assert b(i) == ("out", i)
    assert b.stats.fixed_cost is not None and b.stats.fixed_cost > 0
    fake_clock.advance(60.0)  # a quiet minute

    # The engine clock stays frozen from here: had the worker decided to wait, it would wait forever.
    assert spawn(b, "lone").result() == ("out", "lone")
    assert gate.calls[-1] == ["lone"]


def test_while_a_batch_runs_the_queue_fills_and_the_next_batch_takes_what_is_there(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, name="fills")
    first = spawn(b, "first")
    gate.wait_blocked()
    assert gate.calls == [["first"]], "the first call went out alone, at once"

    callers = []
    for i in range(5):
        callers.append(spawn(b, i))
        queued(b, i + 1)
    gate.open()

    assert first.result() == ("out", "first")
    assert [c.result() for c in callers] == [("out", i) for i in range(5)]
    assert gate.calls == [["first"], [0, 1, 2, 3], [4]]


def test_max_wait_ms_zero_never_waits_even_when_the_adaptive_policy_would(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, is_async: bool
) -> None:
    """The same burst that makes the adaptive policy wait (see below) goes out at once with ``0``."""
    gate = costly(make_gate, fake_clock, 0.010, is_async)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="no-wait")

    assert spawn(b.map, range(76)).result() == [("out", i) for i in range(76)]
    assert gate.sizes == [8] * 9 + [4]


def test_the_adaptive_policy_waits_for_company_in_a_burst_but_no_longer_than_one_batch_costs(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, queued: Any, wait_until: Any, is_async: bool
) -> None:
    """When more items are expected within one fixed cost, the last partial batch of a burst waits for
    company, and gives up once one full batch's measured cost has passed, even while items keep coming."""
    gate = costly(make_gate, fake_clock, 0.010, is_async)
    b = make_batcher(gate, max_batch_size=8, name="adaptive")
    assert b("first") == ("out", "first")  # a batch of another size, so the fit can see the fixed cost

    burst = spawn(b.map, range(76))
    wait_until(lambda: b.stats.batches == 10 and b.stats.queue_depth == 4, "nine full batches ran, four items are left")
    late = []
    for i in range(3):
        late.append(spawn(b, f"late-{i}"))
        queued(b, 5 + i)
    assert gate.sizes == [1] + [8] * 9, "the four left over were held for company"

    stats = b.stats
    assert stats.fixed_cost is not None and stats.per_item_cost is not None
    one_batch = stats.fixed_cost + stats.per_item_cost * 8 + 1e-6
    fake_clock.advance(one_batch)
    wait_until(lambda: len(gate.calls) == 11, "the held items went out once one batch's cost had passed")

    def time_passes() -> bool:
        # The map's last item, alone again, waits for company no longer than that either; time keeps
        # moving until it goes (advancing once could come before the worker starts its wait).
        fake_clock.advance(one_batch)
        return len(gate.calls) == 12

    wait_until(time_passes, "the map's last item went out")

    assert burst.result() == [("out", i) for i in range(76)]
    assert [c.result() for c in late] == [("out", f"late-{i}") for i in range(3)]
    # The single calls, small requests, go ahead of the bulk map's rest, in a batch the map tops up
    # to 3/4 of max_batch_size (small requests ride a shorter batch); the map's last item follows.
    assert gate.calls[10:] == [["late-0", "late-1", "late-2", 72, 73, 74], [75]]


def test_a_full_batch_is_dispatched_at_once_even_under_a_long_max_wait(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, queued: Any, is_async: bool
) -> None:
    gate = make_gate(open=True, is_async=is_async)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=60_000, name="full")

    callers = []
    for i in range(3):
        callers.append(spawn(b, i))
        queued(b, i + 1)
    callers.append(spawn(b, 3))  # the fourth item fills the batch

    assert [c.result() for c in callers] == [("out", i) for i in range(4)]
    assert spawn(b.map, list("wxyz")).result() == [("out", x) for x in "wxyz"]
    assert gate.calls == [[0, 1, 2, 3], ["w", "x", "y", "z"]]


def test_a_positive_max_wait_ms_holds_a_partial_batch_for_company_until_the_bound(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, queued: Any, is_async: bool
) -> None:
    gate = make_gate(open=True, is_async=is_async)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=100, name="bounded")

    a = spawn(b, "a")
    queued(b, 1)
    fake_clock.advance(0.099)
    c = spawn(b, "b")
    queued(b, 2)
    assert gate.calls == [], "not full and the bound has not passed: nothing was dispatched"

    fake_clock.advance(0.001)  # now 100 ms after the oldest item arrived

    assert (a.result(), c.result()) == (("out", "a"), ("out", "b"))
    assert gate.calls == [["a", "b"]]


def test_the_max_wait_bound_counts_from_the_oldest_arrival_not_from_the_last_batch(
    make_batcher: Any, gate: Any, fake_clock: Any, spawn: Any, queued: Any
) -> None:
    """An item that already waited out the bound behind a busy worker goes out as soon as the worker is free."""
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=100, name="oldest")
    first = spawn(b.map, ["x1", "x2"])  # a full batch goes out at once
    gate.wait_blocked()

    late = spawn(b, "a")
    queued(b, 1)
    fake_clock.advance(0.100)  # "a" has waited its full bound while the worker was busy
    gate.open()

    # The clock stays frozen: counted from the end of the last batch, "a" would wait forever.
    assert first.result() == [("out", "x1"), ("out", "x2")]
    assert late.result() == ("out", "a")
    assert gate.calls == [["x1", "x2"], ["a"]]


def test_an_infinite_max_wait_ms_is_refused_or_means_wait_until_full(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, is_async: bool
) -> None:
    """``max_wait_ms=inf`` must not break the worker: refuse it up front, or wait for a full batch
    and let ``close(drain=True)`` run what is left."""
    gate = make_gate(open=True, is_async=is_async)
    try:
        b: Batcher[Any, Any] = make_batcher(gate, max_batch_size=3, max_wait_ms=float("inf"), name="infinite")
    except ValueError as exc:
        assert "max_wait_ms" in str(exc)
        return

    callers = []
    for i in range(2):
        callers.append(spawn(b, i))
        queued(b, i + 1)
    callers.append(spawn(b, 2))  # the batch is full only now
    assert [c.result() for c in callers] == [("out", i) for i in range(3)]

    lone = spawn(b, "lone")
    queued(b, 1)
    closer = spawn(b.close, drain=True)
    assert lone.result() == ("out", "lone")
    closer.result()
    assert gate.calls == [[0, 1, 2], ["lone"]]


def test_the_adaptive_wait_ends_once_every_caller_the_last_batch_released_is_back(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, hold: Any, queued: Any, loop_thread: Any,
    wait_until: Any, is_async: bool,
) -> None:
    """A closed loop of asyncio tasks comes back whole and at once: when as many callers as the last
    batch released are queued, nobody else is known to be on the way, and the batch goes without
    waiting out the fixed cost. The clock is frozen, so a wait would never end by itself."""

    def fixed_cost(items: list[Any]) -> list[Any]:
        fake_clock.advance(0.3)  # every call costs 0.3 s, whatever its size: a pure fixed cost
        return [("out", x) for x in items]

    gate = make_gate(fixed_cost, is_async=is_async)
    b = make_batcher(gate, max_batch_size=8, name="closed-loop")
    gate.release(2)
    assert b("first") == ("out", "first")
    assert b.map(range(8)) == [("out", i) for i in range(8)]  # two sizes, one cost: the fit sees a fixed cost
    assert b.stats.fixed_cost == pytest.approx(0.3)
    fake_clock.advance(60.0)  # a quiet minute: the arrival rate decays to nothing

    blocker = hold(b, gate)  # one arrival is not worth waiting for (arrival rate x fixed cost < 1)
    first_round = [spawn(b, f"c{i}") for i in range(4)]
    queued(b, 4)
    gate.release()
    assert blocker.result() == ("out", "blocker")
    # Four arrivals at once are: the four wait for company, and none comes (nobody else was released).
    assert len(gate.calls) == 3
    fake_clock.advance(0.3 + 1e-6)
    gate.wait_calls(4)
    assert gate.calls[3] == ["c0", "c1", "c2", "c3"]
    gate.release()
    assert [c.result() for c in first_round] == [("out", f"c{i}") for i in range(4)]

    # The four callers come back as tasks on one loop. Three are not all of them: they wait.
    second_round = [loop_thread.start(b.acall(f"d{i}")) for i in range(3)]
    queued(b, 3)
    assert len(gate.calls) == 4, "three of the four callers were held for the fourth"
    second_round.append(loop_thread.start(b.acall("d3")))
    gate.wait_calls(5)  # the clock has not moved: only the fourth arrival could have sent the batch
    assert gate.calls[4] == ["d0", "d1", "d2", "d3"]
    gate.release()
    assert [c.result() for c in second_round] == [("out", f"d{i}") for i in range(4)]
    assert b.stats.dispatch_reasons["company_ended"] == 2
