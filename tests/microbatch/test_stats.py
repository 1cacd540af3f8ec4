"""Statistics: item counters for every outcome, live queue depth and running items, the batch-size
histogram, p50/p99 and cumulative histograms of queue wait and run time over a recent window, the
fitted cost model, a JSON-ready ``as_dict`` and a ``repr`` that shows the live state.

Timing statistics are checked on the frozen engine clock (``fake_clock``), advanced by the batch
function itself, so every run time is known exactly (multiples of 1/1024 s are exact in binary).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from microbatch import BatcherClosed, DeadlineExceeded, Overloaded, Stats

TICK = 1 / 1024  # seconds; exact in binary floating point


def timed(make_gate: Any, clock: Any, cost: Any) -> Any:
    """An open gate whose call on ``items`` takes ``cost(items)`` seconds of the engine clock."""

    def process(items: list[Any]) -> list[Any]:
        clock.advance(cost(items))
        return [("out", x) for x in items]

    return make_gate(process, open=True)


def test_a_new_batcher_reports_zeros(make_batcher: Any, make_gate: Any) -> None:
    stats = make_batcher(make_gate(open=True), name="fresh").stats

    assert isinstance(stats, Stats)
    assert stats.name == "fresh"
    counters = (stats.submitted, stats.completed, stats.failed, stats.rejected, stats.expired, stats.cancelled)
    assert counters == (0, 0, 0, 0, 0, 0)
    assert (stats.batches, stats.queue_depth, stats.running, stats.in_flight) == (0, 0, 0, 0)
    assert (stats.mean_batch_size, stats.batch_sizes) == (0.0, {})
    assert (stats.queue_wait_p50, stats.queue_wait_p99, stats.run_time_p50, stats.run_time_p99) == (0, 0, 0, 0)
    assert stats.run_time.count == 0 and set(stats.run_time.counts) == {0}
    assert (stats.fixed_cost, stats.per_item_cost) == (None, None)


def test_every_accepted_item_is_counted_in_exactly_one_outcome_and_refusals_as_rejected(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, loop_thread: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ValueError("bad")
        return [("out", x) for x in items]

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_queue_size=8, max_wait_ms=0, name="outcomes")
    calls = [spawn(b, "blocker")]
    gate.wait_blocked()
    calls += [spawn(b.map, ["m0", "m1", "m2"]), spawn(b, "bad")]
    leaving = loop_thread.start(b.acall("leaving"))
    queued(b, 5)
    assert isinstance(spawn(b, "late", timeout=0.01).exception(), DeadlineExceeded)
    leaving.cancel()
    leaving.wait()
    with pytest.raises(Overloaded):
        b.map(range(5))  # 4 queued + 5 > 8

    gate.open()
    for call in calls:
        call.wait()
    b.close()
    with pytest.raises(BatcherClosed):
        b("closed")

    stats = b.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.expired, stats.cancelled) == (7, 4, 1, 1, 1)
    assert stats.rejected == 6
    assert stats.batches == len(gate.calls), "every call of the batch function is a batch, retries included"
    assert stats.submitted == stats.completed + stats.failed + stats.expired + stats.cancelled
    assert stats.in_flight == 0


def test_queue_depth_running_and_in_flight_show_the_live_state(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, name="live")
    calls = [spawn(b.map, ["r0", "r1"])]
    gate.wait_blocked()
    calls += [spawn(b, i) for i in range(3)]
    queued(b, 3)

    stats = b.stats
    assert (stats.running, stats.queue_depth, stats.in_flight, stats.submitted) == (2, 3, 5, 5)
    gate.open()
    for call in calls:
        call.result()
    stats = b.stats
    assert (stats.running, stats.queue_depth, stats.in_flight, stats.completed) == (0, 0, 0, 5)


def test_batch_sizes_and_mean_batch_size_count_every_call_of_the_batch_function(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, name="sizes")
    calls = [spawn(b, "first")]
    gate.wait_blocked()
    calls += [spawn(b, i) for i in range(3)]
    queued(b, 3)
    gate.open()
    for call in calls:
        call.result()
    b.map(range(5))

    stats = b.stats
    assert gate.sizes == [1, 3, 4, 1]
    assert stats.batch_sizes == {1: 2, 3: 1, 4: 1}
    assert stats.batches == 4
    assert stats.mean_batch_size == pytest.approx(9 / 4)


def test_run_time_percentiles_and_cumulative_histogram(make_batcher: Any, make_gate: Any, fake_clock: Any) -> None:
    """Runs of 1..100 ticks: p50 is the 50th, p99 the 99th; the histogram counts runs at or below each bound."""
    gate = timed(make_gate, fake_clock, lambda items: items[0] * TICK)
    b = make_batcher(gate, max_wait_ms=0, name="run-times")
    for i in range(1, 101):
        b(i)

    stats = b.stats
    assert stats.run_time_p50 == 50 * TICK
    assert stats.run_time_p99 == 99 * TICK
    histogram = stats.run_time
    assert (histogram.count, histogram.sum) == (100, 5050 * TICK)
    at_or_below = dict(zip(histogram.bounds, histogram.counts, strict=True))
    # 0.001 s is 1.02 ticks, 0.01 s is 10.24 ticks, 0.05 s is 51.2 ticks, 0.1 s is 102.4 ticks.
    assert (at_or_below[0.0005], at_or_below[0.001], at_or_below[0.01], at_or_below[0.05]) == (0, 1, 10, 51)
    assert at_or_below[0.1] == at_or_below[10.0] == 100
    assert list(histogram.counts) == sorted(histogram.counts), "cumulative"


def test_p99_of_fewer_than_a_hundred_runs_is_the_slowest_run(
    make_batcher: Any, make_gate: Any, fake_clock: Any
) -> None:
    """Nearest-rank p99 over 60 observations is the 60th: one slow batch in 60 shows in p99."""
    gate = timed(make_gate, fake_clock, lambda items: items[0] * TICK)
    b = make_batcher(gate, max_wait_ms=0, name="p99-small")
    for i in range(1, 61):
        b(i)

    assert b.stats.run_time_p99 == 60 * TICK


def test_percentiles_cover_the_recent_window_while_histograms_count_everything(
    make_batcher: Any, make_gate: Any, fake_clock: Any
) -> None:
    gate = timed(make_gate, fake_clock, lambda items: items[0] * TICK)
    b = make_batcher(gate, max_wait_ms=0, name="window")
    for _ in range(100):
        b(1000)  # slow runs, long ago
    for _ in range(b.stats.window):
        b(1)

    stats = b.stats
    assert (stats.run_time_p50, stats.run_time_p99) == (TICK, TICK)
    assert stats.run_time.count == 100 + stats.window


def test_queue_wait_is_the_time_from_arrival_to_dispatch(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, fake_clock: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="queue-wait")
    first = spawn(b, "first")  # dispatched at once: waited 0
    gate.wait_blocked()
    second = spawn(b, "second")
    queued(b, 1)
    fake_clock.advance(256 * TICK)  # a quarter of a second behind the running batch
    gate.open()
    first.result()
    second.result()

    stats = b.stats
    assert (stats.queue_wait.count, stats.queue_wait.sum) == (2, 0.25)
    assert (stats.queue_wait_p50, stats.queue_wait_p99) == (0.0, 0.25)


def test_the_cost_model_fits_a_fixed_cost_per_call_and_a_cost_per_item(
    make_batcher: Any, make_gate: Any, fake_clock: Any
) -> None:
    gate = timed(make_gate, fake_clock, lambda items: 10 * TICK + len(items) * TICK)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="cost")
    for n in (1, 2, 4, 8, 3):
        b.map(range(n))

    stats = b.stats
    assert stats.fixed_cost == pytest.approx(10 * TICK)
    assert stats.per_item_cost == pytest.approx(TICK)


def test_as_dict_is_plain_json_serialisable_data(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), max_batch_size=4, max_wait_ms=0, name="json")
    b.map(range(6))

    data = json.loads(json.dumps(b.stats.as_dict(), allow_nan=False))
    assert data["name"] == "json"
    assert data["batch_sizes"] == {"2": 1, "4": 1}
    assert data["in_flight"] == 0
    assert data["run_time"]["count"] == 2
    assert len(data["run_time"]["bounds"]) == len(data["run_time"]["counts"])
    assert {f.name for f in dataclasses.fields(Stats)} <= set(data)


def test_stats_is_a_frozen_snapshot(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), name="snapshot")
    before = b.stats
    b(1)

    assert before.submitted == 0 and b.stats.submitted == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.submitted = 5


def test_repr_shows_the_configuration_and_the_live_state(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, name="shown")
    assert "'shown'" in repr(b) and "idle" in repr(b) and "max_batch_size=4" in repr(b)

    spawn(b, "first")
    gate.wait_blocked()
    spawn(b.map, ["a", "b"])
    queued(b, 2)
    live = repr(b)
    assert "running" in live and "queued=2" in live and "running=1" in live and "max_wait_ms=0" in live

    gate.open()
    b.close()
    assert "closed" in repr(b) and "completed=3" in repr(b)
