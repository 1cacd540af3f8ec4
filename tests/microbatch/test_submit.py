"""``Batcher.submit``: queue a request without waiting; its callback runs exactly once with the outcome.

What a caller that runs its own loop (microbatch.remote's host) relies on: refusals raise at once,
results and errors reach the callback on an engine thread, a cancelled or expired request never
runs, and a callback that raises harms nobody.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from microbatch import BatcherClosed, DeadlineExceeded, Overloaded


class Outcomes:
    """A callback that records each ``(results, error, thread name)`` and can be waited on."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, BaseException | None, str]] = []
        self._cond = threading.Condition()

    def __call__(self, results: Any, error: BaseException | None) -> None:
        with self._cond:
            self.seen.append((results, error, threading.current_thread().name))
            self._cond.notify_all()

    def wait(self, n: int) -> list[tuple[Any, BaseException | None, str]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= n, timeout=10), self.seen
            return list(self.seen)


def test_submitted_requests_batch_with_calls_and_each_callback_gets_its_own_results(
    make_batcher: Any, gate: Any, hold: Any, queued: Any, wait_until: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="submit")
    blocker = hold(b, gate)
    first, second = Outcomes(), Outcomes()
    b.submit(["a", "b"], first)
    b.submit(["c"], second)
    queued(b, 3)
    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert first.wait(1) == [([("out", "a"), ("out", "b")], None, "microbatch-submit")]
    assert second.wait(1) == [([("out", "c")], None, "microbatch-submit")]
    assert gate.calls == [["blocker"], ["a", "b", "c"]]
    wait_until(lambda: b.stats.completed == 4, "the stats count the submitted items")


def test_an_empty_submission_calls_back_at_once_with_no_results(make_batcher: Any, gate: Any) -> None:
    b = make_batcher(gate)
    outcomes = Outcomes()
    b.submit([], outcomes)()  # its cancel function does nothing
    assert outcomes.seen == [([], None, threading.current_thread().name)]
    assert gate.calls == []


def test_refusals_raise_in_the_submitter_and_never_call_back(
    make_batcher: Any, gate: Any, hold: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_queue_size=2, name="submit-full")
    blocker = hold(b, gate)
    outcomes = Outcomes()
    b.submit(["a", "b"], outcomes)
    queued(b, 2)
    with pytest.raises(Overloaded):
        b.submit(["c"], outcomes)
    with pytest.raises(ValueError, match="timeout"):
        b.submit(["d"], outcomes, timeout=0)
    gate.open()
    blocker.result()
    outcomes.wait(1)
    b.close()
    with pytest.raises(BatcherClosed):
        b.submit(["e"], outcomes)
    assert [error for _, error, _ in outcomes.seen] == [None]


def test_a_cancelled_submission_never_runs_and_its_callback_gets_cancelled_error(
    make_batcher: Any, gate: Any, hold: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="submit-cancel")
    blocker = hold(b, gate)
    outcomes = Outcomes()
    cancel = b.submit(["victim"], outcomes)
    queued(b, 1)
    cancel()
    ((results, error, _),) = outcomes.wait(1)
    assert results is None and isinstance(error, asyncio.CancelledError)
    cancel()  # a second cancel, or one after the outcome, does nothing
    gate.open()
    blocker.result()
    assert b("after") == ("out", "after")
    assert gate.calls == [["blocker"], ["after"]]
    assert len(outcomes.seen) == 1 and b.stats.cancelled == 1


def test_a_submission_past_its_deadline_fails_when_the_worker_next_plans_and_never_runs(
    make_batcher: Any, gate: Any, hold: Any, queued: Any, fake_clock: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name="submit-late")
    blocker = hold(b, gate)
    outcomes = Outcomes()
    b.submit(["late"], outcomes, timeout=1.0)
    queued(b, 1)
    fake_clock.advance(2.0)
    assert outcomes.seen == []  # no timer: the worker is busy, the deadline is checked when it plans
    gate.open()
    blocker.result()
    ((results, error, _),) = outcomes.wait(1)
    assert results is None and isinstance(error, DeadlineExceeded)
    assert gate.calls == [["blocker"]]


def test_a_raising_callback_is_logged_and_the_worker_keeps_serving(
    make_batcher: Any, gate: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate.open()
    b = make_batcher(gate, name="submit-raises")
    done = threading.Event()

    def bad_callback(results: Any, error: BaseException | None) -> None:
        done.set()
        raise RuntimeError("a faulty callback")

    b.submit(["x"], bad_callback)
    assert done.wait(10)
    assert b("y") == ("out", "y")
    assert "submit() callback raised" in caplog.text


def test_submit_many_queues_every_request_before_the_worker_plans_so_one_batch_takes_them_all(
    make_batcher: Any, gate: Any
) -> None:
    gate.open()
    b = make_batcher(gate, max_wait_ms=0, name="submit-many")
    outcomes = [Outcomes() for _ in range(3)]
    cancels = b.submit_many([
        (["a"], outcomes[0], None, False), (["b", "c"], outcomes[1], 10.0, False), (["d"], outcomes[2], None, True)
    ])
    assert all(callable(cancel) and not isinstance(cancel, Exception) for cancel in cancels)
    assert [o.wait(1)[0][:2] for o in outcomes] == [
        ([("out", "a")], None), ([("out", "b"), ("out", "c")], None), ([("out", "d")], None)
    ]
    # An idle worker dispatches at once (max_wait_ms=0): it saw all four items queued together.
    assert gate.calls == [["a", "b", "c", "d"]]


def test_submit_many_returns_each_refusal_in_its_place_and_queues_the_rest(
    make_batcher: Any, gate: Any, hold: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=2, max_queue_size=2, name="submit-many-full")
    blocker = hold(b, gate)
    outcomes = Outcomes()
    empty = Outcomes()
    first, full, none, text, no_time = b.submit_many([
        (["a", "b"], outcomes, None, False), (["c"], outcomes, None, False), ([], empty, None, False),
        ("word", outcomes, None, False), (["d"], outcomes, 0, False),
    ])
    assert callable(first) and not isinstance(first, Exception)
    assert isinstance(full, Overloaded)
    assert empty.seen == [([], None, threading.current_thread().name)] and callable(none)
    assert isinstance(text, TypeError) and "would split this str" in str(text)
    assert isinstance(no_time, ValueError) and "timeout" in str(no_time)
    queued(b, 2)
    gate.open()
    blocker.result()
    assert outcomes.wait(1) == [([("out", "a"), ("out", "b")], None, "microbatch-submit-many-full")]
    b.close()
    (closed,) = b.submit_many([(["e"], outcomes, None, False)])
    assert isinstance(closed, BatcherClosed) and len(outcomes.seen) == 1


def test_with_return_exceptions_a_failed_item_takes_its_error_in_its_place(make_batcher: Any) -> None:
    def upper_unless_bad(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    b = make_batcher(upper_unless_bad, max_wait_ms=0)
    mixed, whole = Outcomes(), Outcomes()
    b.submit(["a", "bad", "c"], mixed, return_exceptions=True)
    b.submit(["bad"], whole)
    [(results, error, _)] = mixed.wait(1)
    assert error is None and results[0::2] == ["A", "C"]
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad item"
    [(results, error, _)] = whole.wait(1)
    assert results is None and isinstance(error, ValueError)  # without it, the request fails whole


def test_submit_many_takes_return_exceptions_per_request(make_batcher: Any) -> None:
    def upper_unless_bad(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    b = make_batcher(upper_unless_bad, max_wait_ms=0, name="submit-many-mixed")
    mixed, whole = Outcomes(), Outcomes()
    b.submit_many([(["a", "bad"], mixed, None, True), (["bad"], whole, None, False)])
    [(results, error, _)] = mixed.wait(1)
    assert error is None and results[0] == "A" and isinstance(results[1], ValueError)
    [(results, error, _)] = whole.wait(1)
    assert results is None and isinstance(error, ValueError)
