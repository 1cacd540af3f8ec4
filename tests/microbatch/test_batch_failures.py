"""Batch-wide failures: bisection stays exact for a few bad items but is bounded when everything fails,
``batch_errors`` are never bisected, retries are counted, and a circuit breaker fails calls fast
during an outage, probing (on the engine's controllable clock) before it accepts work again."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microbatch import CircuitOpen, Overloaded
from microbatch._isolate import ISOLATE_LIMIT, Bisection
from microbatch._request import Request
from microbatch.remote._wire import decode_error, encode_error
from microbatch.web import error_response

WAIT = 10.0  # bounds a wait for something that should happen at once; no assertion depends on it


class CudaError(RuntimeError):
    """What a broken accelerator raises for any input."""


def broken(items: list[Any]) -> list[Any]:
    if items == ["blocker"]:
        return [("out", "blocker")]
    raise RuntimeError("CUDA error")


def bad_items(*bad: Any, message: str = "bad input") -> Any:
    """A model that raises the same ValueError (same message) for any batch holding one of ``bad``."""

    def process(items: list[Any]) -> list[Any]:
        if any(x in bad for x in items):
            raise ValueError(message)
        return [("out", x) for x in items]

    return process


# ---------------------------------------------------------------------------------------------- bisection


def test_an_outage_costs_seven_calls_per_batch_not_two_n_minus_one(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any, is_async: bool
) -> None:
    gate = make_gate(broken, is_async=is_async)
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="outage")
    hold(b, gate)
    calls = enqueue(b, *range(32))
    gate.open()

    for call in calls:
        error = call.exception()
        assert type(error) is RuntimeError and str(error) == "CUDA error"
    assert gate.sizes[1:] == [32, 16, 16, 8, 8, 8, 8], "the halves and the quarters, then it stops"
    stats = b.stats
    assert (stats.failed, stats.batches, stats.retries) == (32, 8, 6)


def test_two_bad_items_in_different_halves_with_the_same_message_fail_only_their_own_callers(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    gate = make_gate(bad_items(3, 20))
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="two-bad")
    hold(b, gate)
    calls = enqueue(b, *range(32))
    gate.open()

    for x, call in enumerate(calls):
        if x in (3, 20):
            assert str(call.exception()) == "bad input"
        else:
            assert call.result() == ("out", x)
    stats = b.stats
    assert (stats.completed, stats.failed) == (31, 2)
    assert stats.retries == len(gate.calls) - 2 <= 2 * 2 * math.ceil(math.log2(32))


def test_up_to_the_limit_bad_items_are_isolated_exactly_and_more_fail_the_parts_that_hold_them(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    """Three bad items, one per quarter, are found; a fourth proves more than three failing parts at
    one level, which is taken as a batch-wide fault: the failing quarters fail whole."""
    assert ISOLATE_LIMIT == 3
    gate = make_gate(bad_items(1, 9, 17))
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="three-bad")
    hold(b, gate)
    calls = enqueue(b, *range(32))
    gate.open()
    assert [x for x, call in enumerate(calls) if call.exception() is not None] == [1, 9, 17]

    gate = make_gate(bad_items(1, 9, 17, 25), open=True)
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="four-bad")
    with pytest.raises(ValueError, match="bad input"):
        b.map(range(32))
    assert gate.sizes == [32, 16, 16, 8, 8, 8, 8]


def test_a_batch_error_type_is_never_bisected(make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any) -> None:
    def process(items: list[Any]) -> list[Any]:
        if items == ["blocker"]:
            return [("out", "blocker")]
        raise CudaError("device lost")

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, batch_errors=(TimeoutError, CudaError), name="cuda")
    hold(b, gate)
    calls = enqueue(b, *range(8))
    gate.open()

    assert all(type(call.exception()) is CudaError for call in calls)
    assert gate.sizes == [1, 8]
    assert b.stats.retries == 0


def test_a_batch_error_met_while_bisecting_fails_the_rest_of_the_batch_without_more_calls(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ValueError("bad input")
        if len(items) == 4:
            raise TimeoutError("the backend stopped answering")
        return [("out", x) for x in items]

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, batch_errors=TimeoutError, name="mid-bisection")
    hold(b, gate)
    calls = enqueue(b, "bad", 1, 2, 3, 4, 5, 6, 7)
    gate.open()

    errors = [type(call.exception()) for call in calls]
    assert errors == [ValueError] * 4 + [TimeoutError] * 4, "each failing part keeps its own exception"
    assert gate.sizes == [1, 8, 4, 4]


@pytest.mark.parametrize("value", [CudaError("x"), "TimeoutError", (TimeoutError, 3), [TimeoutError]])
def test_batch_errors_must_be_exception_classes(make_batcher: Any, value: Any) -> None:
    with pytest.raises(TypeError, match=r"batch_errors must be an exception class or a tuple of them, like \("):
        make_batcher(broken, batch_errors=value)


def run_bisection(n: int, bad: set[int]) -> tuple[int, set[int], str]:
    """Drive one batch of items 0..n-1 through the bisection plan with a model failing on ``bad``."""
    requests = [Request([i], True, None, 0.0, None, None) for i in range(n)]  # type: ignore[arg-type]
    plan = Bisection([(r, 0, 1) for r in requests], True, ())
    failed: set[int] = set()
    while (part := plan.next_part()) is not None:
        items = {r.items[0] for r, _, _ in part}
        plan.ran()
        if items & bad:
            for failing, _ in plan.failed(part, ValueError("bad")):
                failed |= {r.items[0] for r, _, _ in failing}
        else:
            plan.succeeded()
    return plan.calls, failed, plan.verdict


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_the_documented_bounds_hold_for_any_set_of_bad_items(case: tuple[int, set[int]]) -> None:
    n, bad = case
    calls, failed, verdict = run_bisection(n, bad)
    levels = math.ceil(math.log2(n)) if n > 1 else 0
    assert calls <= 1 + sum(2 * min(ISOLATE_LIMIT, 2 ** (d - 1)) for d in range(1, levels + 1))
    assert bad <= failed, "every bad item's caller fails"
    if len(bad) <= ISOLATE_LIMIT:
        assert failed == bad, "a few bad items are isolated exactly"
    if bad and len(bad) < n and len(bad) <= ISOLATE_LIMIT:
        assert verdict == "ok", "the good items ran: the model works"
    elif bad == set(range(n)) and n > ISOLATE_LIMIT:
        assert verdict == "batch_wide"
        assert calls <= 7, "an outage costs at most the whole, the halves and the quarters"
    elif bad == set(range(n)):
        assert verdict == "failed" and calls == 2 * n - 1, "a tiny batch cannot tell an outage from bad items"


# ---------------------------------------------------------------------------------------------- breaker


class Switch:
    """A model that is down (every batch fails) until the test brings it back up."""

    def __init__(self) -> None:
        self.up = False

    def __call__(self, items: list[Any]) -> list[Any]:
        if not self.up:
            raise RuntimeError("backend down")
        return [("out", x) for x in items]


def test_after_a_run_of_batch_wide_failures_calls_fail_fast_then_a_probe_closes_the_breaker(
    make_batcher: Any, make_gate: Any, fake_clock: Any
) -> None:
    model = Switch()
    gate = make_gate(model, open=True)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, breaker_threshold=2, breaker_open_ms=1000, name="cb")
    for _ in range(2):
        with pytest.raises(RuntimeError, match="backend down"):
            b.map(range(8))
    assert (b.stats.breaker_state, b.stats.breaker_opened) == ("open", 1)

    runs = len(gate.calls)
    with pytest.raises(CircuitOpen, match=r"refuses calls for 1s after 2 batch-wide failures") as refused:
        b("fast")
    assert isinstance(refused.value, Overloaded) and refused.value.retry_after == 1.0
    assert len(gate.calls) == runs, "nothing ran"
    assert b.stats.rejected == 1

    fake_clock.advance(1.0)
    assert b.stats.breaker_state == "half_open"
    with pytest.raises(RuntimeError, match="backend down"):
        b.map(range(8))  # the probe fails: open again, for twice as long
    with pytest.raises(CircuitOpen) as refused:
        b("fast")
    assert refused.value.retry_after == 2.0
    assert (b.stats.breaker_state, b.stats.breaker_opened) == ("open", 2)

    fake_clock.advance(2.0)
    model.up = True
    assert b("probe") == ("out", "probe")
    assert b.stats.breaker_state == "closed"
    assert b.map(range(3)) == [("out", i) for i in range(3)]


def test_when_the_breaker_opens_the_queued_calls_fail_at_once_without_running(
    make_batcher: Any, make_gate: Any, spawn: Any, enqueue: Any
) -> None:
    gate = make_gate(Switch())
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, breaker_threshold=1, name="cb-queued")
    doomed = spawn(b.map, list(range(8)))
    gate.wait_blocked()
    queued = enqueue(b, "q1", "q2", ["m1", "m2"])
    gate.open()

    assert isinstance(doomed.exception(), RuntimeError)
    for call in queued:
        error = call.exception()
        assert type(error) is CircuitOpen and 0 < error.retry_after <= 1.0
    assert all("q1" not in call for call in gate.calls)
    stats = b.stats
    assert (stats.failed, stats.in_flight, stats.breaker_opened) == (12, 0, 1)


def test_half_open_admits_one_batch_as_the_probe_and_refuses_the_rest_until_it_ends(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, fake_clock: Any
) -> None:
    model = Switch()
    probing, release = threading.Event(), threading.Event()

    def process(items: list[Any]) -> list[Any]:
        if "p1" in items:
            probing.set()
            release.wait(WAIT)
        return model(items)

    gate = make_gate(process, open=True)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, breaker_threshold=1, name="cb-probe")
    with pytest.raises(RuntimeError):
        b.map(range(8))
    fake_clock.advance(1.0)
    model.up = True

    probe = spawn(b.map, [f"p{i}" for i in range(1, 8)])
    assert probing.wait(WAIT)
    last = spawn(b, "p8")  # the probe batch has room for one more item
    queued(b, 1)
    with pytest.raises(CircuitOpen, match="probing"):
        b("one too many")
    release.set()

    assert probe.result() == [("out", f"p{i}") for i in range(1, 8)]
    assert last.result() == ("out", "p8")
    assert b("after") == ("out", "after")
    assert b.stats.breaker_state == "closed"


def test_lone_bad_inputs_never_open_the_breaker(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(bad_items("bad"), open=True)
    b = make_batcher(gate, max_wait_ms=0, breaker_threshold=1, name="cb-lone")
    for _ in range(5):
        with pytest.raises(ValueError):
            b("bad")
    assert b.stats.breaker_state == "closed"
    assert b("good") == ("out", "good")


def test_the_breaker_can_be_turned_off(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(Switch(), open=True)
    b = make_batcher(gate, max_batch_size=4, max_wait_ms=0, breaker_threshold=None, name="cb-off")
    for _ in range(8):
        with pytest.raises(RuntimeError):
            b.map(range(4))
    assert (b.stats.breaker_state, b.stats.breaker_opened) == ("closed", 0)


def test_under_fail_batch_every_failure_counts_against_the_model(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(Switch(), open=True)
    b = make_batcher(gate, max_wait_ms=0, on_error="fail_batch", breaker_threshold=2, name="cb-fail-batch")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            b("x")
    with pytest.raises(CircuitOpen):
        b("x")


def test_circuit_open_is_a_503_with_retry_after_and_crosses_the_remote_wire() -> None:
    error = CircuitOpen("batcher 'embed' refuses calls for 2.5s", retry_after=2.5)
    response = error_response(error)
    assert response is not None
    assert (response.status, response.headers) == (503, {"Retry-After": "3"})
    assert "embed" not in response.error, "the client sees no internals"

    copy = decode_error(*encode_error(error))
    assert type(copy) is CircuitOpen and copy.retry_after == 2.5 and str(copy) == str(error)
