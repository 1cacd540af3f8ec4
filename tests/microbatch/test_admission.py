"""Admission by predicted wait and honest ``retry_after``: the cost model prices each queued batch at
its estimate but never above the longest batch measured, so a cold start does not tell clients to
come back in seconds for a queue that drains in a fraction of one; with ``max_queue_delay_ms`` a call
the model says would wait longer than that is refused with ``Overloaded`` at once, and the rest keep
a bounded wait. The engine clock is the fake one: each batch "takes" exactly the time its function
advances it, whatever the machine does."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microbatch import Overloaded
from microbatch._policy import WaitPolicy


def taking(fake_clock: Any, seconds: float) -> Any:
    """A batch function whose every call takes ``seconds`` on the engine clock, whatever its size."""

    def run(items: list[Any]) -> list[Any]:
        fake_clock.advance(seconds)
        return [("out", x) for x in items]

    return run


def test_after_one_batch_of_one_retry_after_is_one_batch_not_a_batch_per_item(
    make_batcher: Any, make_gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    """The issue's case: a 0.2 s call, max_batch_size=32, a full queue of 32 drains in one batch."""
    gate = make_gate(taking(fake_clock, 0.2))
    b = make_batcher(gate, max_batch_size=32, max_queue_size=32, max_wait_ms=0, name="cold")
    gate.release()
    assert b("first") == ("out", "first")  # the only measurement: one batch of one in 0.2 s
    accepted = [hold(b, gate), *enqueue(b, [f"q{i}" for i in range(32)])]

    with pytest.raises(Overloaded) as refused:
        b("one more")

    assert refused.value.retry_after == pytest.approx(0.2), "one batch of 32 at the longest batch seen (was 6.4 s)"
    gate.open()
    for call in accepted:
        call.result()


@given(
    samples=st.lists(st.tuples(st.integers(1, 64), st.floats(0.001, 5.0)), min_size=1, max_size=80),
    max_batch_size=st.integers(1, 64),
    queued=st.integers(1, 5000),
    data=st.data(),
)
def test_retry_after_never_exceeds_the_queued_batches_at_the_longest_batch_seen(
    samples: list[tuple[int, float]], max_batch_size: int, queued: int, data: st.DataObject
) -> None:
    policy = WaitPolicy(None, None, max_batch_size)
    for n, seconds in samples:
        policy.cost.add(min(n, max_batch_size), seconds)
    excess = data.draw(st.integers(1, queued))
    longest = max(t for _, t in list(samples)[-64:])  # the model's window

    retry_after = policy.retry_after(excess)

    assert 0 < retry_after <= math.ceil(queued / max_batch_size) * longest * (1 + 1e-9)


def test_a_call_predicted_to_wait_past_max_queue_delay_ms_is_refused_with_when_to_retry(
    make_batcher: Any, make_gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    """The one measured batch, of 2, took 0.1 s: the fit prices a batch of 1 at 0.05 s. Behind the
    running batch of 1 and two full batches queued, a 5th item would start after 0.25 s, past the
    200 ms bound: refused, told to retry once one batch (0.1 s) has drained."""
    gate = make_gate(taking(fake_clock, 0.1))
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, max_queue_delay_ms=200, name="bounded")
    gate.release()
    assert b.map(["a", "b"]) == [("out", "a"), ("out", "b")]
    accepted = [hold(b, gate), *enqueue(b, "q1", "q2", "q3", "q4")]  # each predicted to start within 0.15 s

    says = r"would start this call in about 0.25s, more than its max_queue_delay_ms=200"
    with pytest.raises(Overloaded, match=says) as refused:
        b("q5")
    with pytest.raises(Overloaded):
        b.map(["m1", "m2"])

    assert refused.value.retry_after == pytest.approx(0.1)
    stats = b.stats
    assert (stats.rejected, stats.queue_depth) == (3, 4)
    gate.open()
    assert [c.result() for c in accepted] == [("out", x) for x in ("blocker", "q1", "q2", "q3", "q4")]
    assert b("after") == ("out", "after"), "accepted again once the queue has drained"


def test_without_max_queue_delay_ms_the_same_queue_accepts(
    make_batcher: Any, make_gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    gate = make_gate(taking(fake_clock, 0.1))
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, name="unbounded")
    gate.release()
    b.map(["a", "b"])
    accepted = [hold(b, gate), *enqueue(b, "q1", "q2", "q3", "q4", "q5")]
    assert b.stats.rejected == 0
    gate.open()
    for call in accepted:
        call.result()


def test_a_cold_batcher_never_refuses_on_a_guess(make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any) -> None:
    """Before any batch has been measured there is no prediction, so max_queue_delay_ms admits."""
    gate = make_gate()
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, max_queue_delay_ms=1, name="unmeasured")
    accepted = [hold(b, gate), *enqueue(b, *range(10))]
    assert b.stats.rejected == 0
    gate.open()
    for call in accepted:
        call.result()


def test_batches_that_run_side_by_side_shorten_the_predicted_wait_and_retry_after() -> None:
    """With replicas or max_concurrent_batches, queued batches drain ``slots`` at a time."""
    one, four = WaitPolicy(None, None, 8), WaitPolicy(None, None, 8, slots=4)
    for policy in (one, four):
        policy.cost.add(8, 0.1)
        policy.cost.add(8, 0.1)

    assert one.queue_delay(queued=64, running=0, n=1) == pytest.approx(0.8)
    assert four.queue_delay(queued=64, running=0, n=1) == pytest.approx(0.2)
    assert one.retry_after(64) == pytest.approx(0.8)
    assert four.retry_after(64) == pytest.approx(0.2)
