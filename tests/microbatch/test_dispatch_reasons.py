"""Why each batch was sent: the planner records a reason per dispatched batch (full, idle worker, wait
bound, company wait ended, token budget, drain), counted in ``Stats.dispatch_reasons`` and the metrics,
and the counters the README promises: token-budget refusals as ``rejected``, items that expired after
dispatch apart as ``expired_running``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from microbatch import DeadlineExceeded, ItemTooLarge
from microbatch._policy import DISPATCH_REASONS, WaitPolicy
from microbatch.prometheus import BatcherCollector


def reasons(b: Any) -> dict[str, int]:
    """The non-zero reason counts."""
    return {reason: n for reason, n in b.stats.dispatch_reasons.items() if n}


def test_every_reason_is_reported_from_the_start_in_a_read_only_mapping(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), name="fresh")
    stats = b.stats
    assert dict(stats.dispatch_reasons) == dict.fromkeys(DISPATCH_REASONS, 0)
    with pytest.raises(TypeError):
        stats.dispatch_reasons["full"] = 1  # type: ignore[index, unused-ignore]
    assert stats.as_dict()["dispatch_reasons"] == dict.fromkeys(DISPATCH_REASONS, 0)


def test_a_lone_call_on_an_idle_worker_goes_out_as_idle(make_batcher: Any, make_gate: Any) -> None:
    b = make_batcher(make_gate(open=True), max_wait_ms=0, name="idle")
    assert b("x") == ("out", "x")
    assert reasons(b) == {"idle": 1}


def test_a_full_queue_goes_out_as_full_even_under_a_long_wait(
    make_batcher: Any, make_gate: Any, fake_clock: Any
) -> None:
    b = make_batcher(make_gate(open=True), max_batch_size=4, max_wait_ms=60_000, name="full")
    assert b.map(range(4)) == [("out", i) for i in range(4)]
    assert reasons(b) == {"full": 1}


def test_a_partial_batch_held_for_company_goes_out_when_its_wait_bound_passes(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(make_gate(open=True), max_batch_size=4, max_wait_ms=100, name="bound")
    lone = spawn(b, "a")
    queued(b, 1)
    fake_clock.advance(0.100)
    assert lone.result() == ("out", "a")
    assert reasons(b) == {"wait_bound": 1}


def test_a_queue_holding_a_whole_token_budget_goes_out_without_waiting(
    make_batcher: Any, make_gate: Any, fake_clock: Any, spawn: Any, queued: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=60_000, max_batch_tokens=10, name="tokens")
    first = spawn(b, "aaaaa")
    queued(b, 1)
    second = spawn(b, "bbbbb")  # 10 tokens queued: no batch could grow by waiting

    assert (first.result(), second.result()) == (("out", "aaaaa"), ("out", "bbbbb"))
    assert gate.calls == [["aaaaa", "bbbbb"]]
    assert reasons(b) == {"token_budget": 1}


def test_what_is_queued_at_close_goes_out_as_drain(
    make_batcher: Any, gate: Any, spawn: Any, hold: Any, enqueue: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=60_000, name="drain")
    blocker = spawn(b.map, list(range(8)))  # a full batch holds the worker
    gate.wait_blocked()
    calls = enqueue(b, "q1", "q2")
    closer = spawn(b.close)
    wait_until(lambda: b.closed, "close() began")
    gate.open()

    assert [call.result() for call in calls] == [("out", "q1"), ("out", "q2")]
    blocker.result()
    closer.result()
    assert reasons(b) == {"full": 1, "drain": 1}


def costed_policy(now: float) -> WaitPolicy:
    """An adaptive policy that has measured 10 ms a call (all fixed cost) and just saw a burst of 200 items."""
    policy = WaitPolicy(None, None, 8)
    policy.cost.add(1, 0.010)
    policy.cost.add(8, 0.010)
    for k in range(20):
        policy.arrived(now - 0.020 + k * 0.001, 10)
    return policy


def test_the_adaptive_wait_ends_as_company_ended_when_nobody_comes_within_one_fixed_cost() -> None:
    now = 100.0
    policy = costed_policy(now)
    oldest: Callable[[float], float] = lambda default: now  # noqa: E731

    reason, delay = policy.why_now(now, 3, False, False, oldest)
    assert reason is None and delay == pytest.approx(0.010), "nobody came yet: wait up to one fixed cost"
    assert policy.why_now(now + 0.010, 3, False, False, oldest) == ("company_ended", 0.0)


def test_the_adaptive_wait_ends_as_company_ended_when_a_burst_goes_quiet_and_as_wait_bound_when_it_does_not() -> None:
    now = 100.0
    oldest: Callable[[float], float] = lambda default: now  # noqa: E731

    quiet = costed_policy(now)
    assert quiet.why_now(now, 3, False, False, oldest)[0] is None
    quiet.arrived(now + 0.001, 1)  # one caller came back, then silence
    assert quiet.why_now(now + 0.006, 4, False, False, oldest) == ("company_ended", 0.0)

    busy = costed_policy(now)
    assert busy.why_now(now, 3, False, False, oldest)[0] is None
    for k in range(1, 20):  # callers keep coming, 1 ms apart, but never fill the batch
        busy.arrived(now + k * 0.001, 1)
    assert busy.why_now(now + 0.020, 3, False, False, oldest) == ("wait_bound", 0.0)


def test_reasons_and_the_new_counters_are_prometheus_metrics(
    make_batcher: Any, make_gate: Any, spawn: Any, hold: Any, queued: Any, fake_clock: Any
) -> None:
    def slow_failure(items: list[Any]) -> list[Any]:
        if "bad" in items:
            fake_clock.advance(30)  # the failed run outlives "urgent"'s deadline
            raise ValueError("bad item")
        return [("out", x) for x in items]

    gate = make_gate(slow_failure)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, max_batch_tokens=20, group_by_length=False, name="metrics")
    hold(b, gate)
    stale = spawn(b, "stale", timeout=10)  # expires in the queue: never run
    queued(b, 1)
    fake_clock.advance(11)
    urgent = spawn(b, "urgent", timeout=20)
    bad = spawn(b, "bad")
    queued(b, 3)
    with pytest.raises(ItemTooLarge):
        b.map(["fine", "x" * 21])
    gate.open()

    assert isinstance(stale.exception(), DeadlineExceeded)
    assert isinstance(urgent.exception(), DeadlineExceeded)
    assert isinstance(bad.exception(), ValueError)
    stats = b.stats
    assert (stats.rejected, stats.expired, stats.expired_running, stats.retries) == (2, 2, 1, 1)

    registry = CollectorRegistry()
    registry.register(BatcherCollector({"embed": b}))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    label = (("batcher", "embed"),)
    assert samples[("microbatch_rejected_items_total", label)] == 2
    assert samples[("microbatch_expired_running_items_total", label)] == 1
    assert samples[("microbatch_retries_total", label)] == 1
    for reason in DISPATCH_REASONS:
        key = ("microbatch_dispatched_batches_total", (("batcher", "embed"), ("reason", reason)))
        assert samples[key] == stats.dispatch_reasons[reason]
    assert samples[("microbatch_breaker_state", (("batcher", "embed"), ("microbatch_breaker_state", "closed")))] == 1
    assert samples[("microbatch_breaker_state", (("batcher", "embed"), ("microbatch_breaker_state", "open")))] == 0
