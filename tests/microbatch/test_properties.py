"""A hypothesis state machine drives random mixes of sync calls, maps, async calls and maps on two
caller loops, cancellations, timeouts, failing items, wrong-length batches and closes (draining or
not) against a batch function held in a gate, so the test decides exactly when each batch runs.

After every step the machine waits until the engine has settled (the worker is held in the gate or
idle, and every request the engine resolved has reached its caller), so each step's effect is
deterministic. At the end it opens the gate, waits for every caller, and checks that:

* every accepted item was resolved exactly once (the stats counters add up, item by item, to the
  outcomes the callers saw) and no caller hangs;
* each caller got its own result (outputs are a function of the input, inputs are unique), and
  every exception a caller got is explained by what happened to its request;
* no batch exceeded ``max_batch_size``; no item reached the batch function after its deadline, after
  its caller cancelled, or after ``close(drain=False)`` dropped it; an item is sent again only after
  a batch holding it raised (isolation by bisection);
* refusals (``Overloaded``, ``BatcherClosed`` at admission) enqueued nothing and count as rejected.

Deadlines run on the frozen engine clock, so they expire exactly when a step advances it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from microbatch import BatcherClosed, BatchSizeMismatch, DeadlineExceeded, Overloaded

TIMEOUT = 1000.0  # engine-clock seconds; a step advances the clock by 400 or 1200


@dataclass(frozen=True)
class Item:
    """A unique input; ``bad`` makes the batch function raise, ``odd`` makes it return one output too few."""

    id: int
    bad: bool = False
    odd: bool = False


class BadItem(Exception):
    """Raised by the batch function for a batch holding a bad item; ``args[0]`` is that item's id."""


def model(items: list[Item]) -> list[Any]:
    if any(x.odd for x in items):
        return [("out", x.id) for x in items][:-1]
    for x in items:
        if x.bad:
            raise BadItem(x.id)
    return [("out", x.id) for x in items]


def raises(call: list[Item]) -> bool:
    return not any(x.odd for x in call) and any(x.bad for x in call)


@dataclass
class Request:
    kind: str  # "call", "map", "acall" or "amap"
    items: list[Item]
    timeout: float | None
    submitted_at: float  # engine clock
    after_close: bool  # close() had begun before it was submitted
    depth_before: int  # items queued when it was submitted
    handle: Any  # a conftest Call or AsyncCall
    cancelled_at: int | None = None  # number of batch-function calls when the test cancelled it
    queued_at_drop: bool = False  # pending with items not yet dispatched when close(drain=False) began

    @property
    def single(self) -> bool:
        return self.kind in ("call", "acall")

    @property
    def is_async(self) -> bool:
        return self.kind in ("acall", "amap")


@dataclass
class Kit:
    """The conftest fixtures the machine needs (test modules cannot import conftest)."""

    make_gate: Callable[..., Any]
    make_batcher: Callable[..., Any]
    spawn: Callable[..., Any]
    wait_until: Callable[..., None]
    clock: Any
    loops: list[Any]
    ids: itertools.count[int] = field(default_factory=itertools.count)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self, kit: Kit) -> None:
        super().__init__()
        self.kit = kit
        self.requests: list[Request] = []
        self.entry_times: list[float] = []  # engine clock at each batch-function call
        self.closer: Any = None
        self.dropped_at: int | None = None  # batch-function calls when close(drain=False) began
        self.close_drain: bool | None = None

    # ------------------------------------------------------------------ setup

    @initialize(
        max_batch_size=st.integers(1, 5),
        extra_queue=st.integers(0, 8),
        small_request_size=st.integers(0, 3),
        on_error=st.sampled_from(["isolate", "fail_batch"]),
        aging_ms=st.sampled_from([None, 0, 100]),
        is_async=st.booleans(),
    )
    def create(
        self, max_batch_size: int, extra_queue: int, small_request_size: int, on_error: str,
        aging_ms: float | None, is_async: bool,
    ) -> None:
        self.gate = gate = self.kit.make_gate(model, is_async=is_async)
        clock, times = self.kit.clock, self.entry_times
        fn: Any
        if is_async:
            async def fn(items: list[Item]) -> Any:
                times.append(clock())
                return await gate(items)
        else:
            def fn(items: list[Item]) -> Any:
                times.append(clock())
                return gate(items)
        self.on_error = on_error
        self.max_queue_size = max_batch_size + extra_queue
        self.b = self.kit.make_batcher(
            fn, max_batch_size=max_batch_size, max_queue_size=self.max_queue_size, max_wait_ms=0,
            small_request_size=small_request_size, on_error=on_error, aging_ms=aging_ms, name="property",
        )

    # ------------------------------------------------------------------ rules

    @rule(
        kind=st.sampled_from(["call", "map", "acall", "amap"]),
        marks=st.lists(st.sampled_from(["ok"] * 6 + ["bad", "odd"]), min_size=1, max_size=6),
        timeout=st.sampled_from([None, None, TIMEOUT]),
        loop=st.integers(0, 1),
    )
    def submit(self, kind: str, marks: list[str], timeout: float | None, loop: int) -> None:
        if kind in ("call", "acall"):
            marks = marks[:1]
        items = [Item(next(self.kit.ids), bad=m == "bad", odd=m == "odd") for m in marks]
        b = self.b
        before = b.stats
        if kind == "call":
            handle = self.kit.spawn(b, items[0], timeout=timeout)
        elif kind == "map":
            handle = self.kit.spawn(b.map, items, timeout=timeout)
        elif kind == "acall":
            handle = self.kit.loops[loop].start(b.acall(items[0], timeout=timeout))
        else:
            handle = self.kit.loops[loop].start(b.amap(items, timeout=timeout))
        self.requests.append(
            Request(kind, items, timeout, self.kit.clock(), self.closer is not None, before.queue_depth, handle)
        )
        counted = before.submitted + before.rejected + len(items)
        self.kit.wait_until(
            lambda: handle.done.is_set() or b.stats.submitted + b.stats.rejected == counted,
            f"the {kind} of {len(items)} items was admitted or refused",
        )
        if b.stats.rejected > before.rejected:
            handle.wait()  # a refused caller is finished, not pending
        self.settle()

    @precondition(lambda self: any(r.is_async and not r.handle.done.is_set() for r in self.requests))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        pending = [r for r in self.requests if r.is_async and not r.handle.done.is_set()]
        request = data.draw(st.sampled_from(pending))
        request.cancelled_at = len(self.gate.calls)
        request.handle.cancel()
        request.handle.wait()
        self.settle()

    @precondition(lambda self: self.gate.held)
    @rule(batches=st.integers(1, 8))
    def release(self, batches: int) -> None:
        """Let up to ``batches`` calls of the batch function run, one at a time."""
        for _ in range(batches):
            if not self.gate.held:
                break
            self.gate.release()
            self.settle()

    @rule(seconds=st.sampled_from([400.0, 1200.0]))
    def advance_clock(self, seconds: float) -> None:
        self.kit.clock.advance(seconds)

    @precondition(lambda self: self.closer is None and len(self.requests) >= 10)
    @rule(drain=st.booleans())
    def close(self, drain: bool) -> None:
        b = self.b
        if not drain:
            self.dropped_at = len(self.gate.calls)
            dispatched = {x.id for call in self.gate.calls for x in call}
            for r in self.requests:
                r.queued_at_drop = not r.handle.done.is_set() and any(x.id not in dispatched for x in r.items)
        self.close_drain = drain
        self.closer = self.kit.spawn(b.close, drain=drain)
        self.kit.wait_until(lambda: b.closed, "close() began")
        self.settle()

    # ------------------------------------------------------------------ checks

    @invariant()
    def batches_never_exceed_max_batch_size(self) -> None:
        if hasattr(self, "b"):
            assert max(self.gate.sizes, default=0) <= self.b.max_batch_size
            assert self.b.stats.queue_depth <= self.max_queue_size

    def settle(self) -> None:
        """Wait until the worker is held in the gate or idle and every resolved request reached its caller."""
        b, gate = self.b, self.gate

        def settled() -> bool:
            stats = b.stats
            resolved = stats.completed + stats.failed + stats.expired + stats.cancelled
            finished = sum(len(r.items) for r in self.requests if r.handle.done.is_set() and self.admitted(r))
            quiet = gate.held or (stats.queue_depth == 0 and stats.running == 0)
            return bool(quiet and resolved == finished)

        self.kit.wait_until(settled, "the engine settled")

    def admitted(self, r: Request) -> bool:
        error = r.handle.error
        if isinstance(error, (Overloaded, ValueError)):
            return False
        return not (isinstance(error, BatcherClosed) and r.after_close)

    def teardown(self) -> None:
        if not hasattr(self, "b"):
            return
        self.gate.open()
        for r in self.requests:
            r.handle.wait()
        (self.closer or self.kit.spawn(self.b.close)).result()
        self.check_batches()
        self.check_outcomes()

    def check_batches(self) -> None:
        owner = {x.id: r for r in self.requests for x in r.items}
        calls = self.gate.calls
        assert len(self.entry_times) == len(calls)
        for index, (call, at) in enumerate(zip(calls, self.entry_times, strict=True)):
            assert len(call) <= self.b.max_batch_size
            for x in call:
                r = owner[x.id]
                if r.timeout is not None:
                    assert at < r.submitted_at + r.timeout, f"{x} reached fn after its deadline"
                if r.cancelled_at is not None:
                    assert index < r.cancelled_at, f"{x} reached fn after its caller cancelled"
                if isinstance(r.handle.error, BatcherClosed) and not r.after_close:
                    assert self.dropped_at is not None and index < self.dropped_at, (
                        f"{x} reached fn after close(drain=False) dropped it"
                    )
        for x_id, r in owner.items():
            appearances = [i for i, call in enumerate(calls) if any(x.id == x_id for x in call)]
            for i in appearances[:-1]:
                assert raises(calls[i]) and self.on_error == "isolate", (
                    f"item {x_id} was sent again although its batch {calls[i]} did not raise"
                )
            if not self.admitted(r):
                assert appearances == [], f"refused item {x_id} reached fn"

    def check_outcomes(self) -> None:
        calls = self.gate.calls
        totals = dict.fromkeys(["completed", "failed", "expired", "cancelled", "rejected"], 0)
        for r in self.requests:
            n, ids = len(r.items), {x.id for x in r.items}
            if self.admitted(r):
                assert r.depth_before + n <= self.max_queue_size, f"{r} was admitted past max_queue_size"
            if r.queued_at_drop:
                assert isinstance(r.handle.error, BatcherClosed), f"{r} was queued at close(drain=False)"
            batches = [call for call in calls if any(x.id in ids for x in call)]
            error = r.handle.error
            if r.handle.cancelled:
                assert r.cancelled_at is not None, f"{r} was cancelled by nobody"
                totals["cancelled"] += n
            elif error is None:
                expected = [("out", x.id) for x in r.items]
                assert r.handle.value == (expected[0] if r.single else expected), f"{r} got another's result"
                assert not any(x.bad or x.odd for x in r.items)
                totals["completed"] += n
            elif isinstance(error, BadItem):
                bad_id = error.args[0]
                if self.on_error == "isolate":
                    assert bad_id in {x.id for x in r.items if x.bad}, f"{r} got another item's error {error!r}"
                else:
                    culprits = [c for c in batches if raises(c) and any(x.id == bad_id and x.bad for x in c)]
                    assert culprits, f"{r} got {error!r} without sharing a failing batch with that item"
                totals["failed"] += n
            elif isinstance(error, BatchSizeMismatch):
                assert any(
                    any(x.odd for x in c) and (error.expected, error.got) == (len(c), len(c) - 1) for c in batches
                ), f"{r} got {error!r} without sharing a batch with an odd item"
                totals["failed"] += n
            elif isinstance(error, DeadlineExceeded):
                assert r.timeout is not None and self.kit.clock() >= r.submitted_at + r.timeout, f"{r}: {error!r}"
                totals["expired"] += n
            elif isinstance(error, BatcherClosed):
                if r.after_close:
                    totals["rejected"] += n
                else:
                    assert self.close_drain is False, f"{r} was dropped although close() drained"
                    totals["cancelled"] += n
            elif isinstance(error, Overloaded):
                assert r.depth_before + n > self.max_queue_size, f"{r} was refused although it fitted"
                assert error.retry_after > 0
                totals["rejected"] += n
            elif isinstance(error, ValueError):
                assert not r.single and n > self.max_queue_size, f"{r}: {error!r}"
                totals["rejected"] += n  # a map that can never fit is refused at admission too
            else:
                raise AssertionError(f"{r} got an unexpected {error!r}")
        stats = self.b.stats
        assert {k: getattr(stats, k) for k in totals} == totals
        assert stats.submitted == stats.completed + stats.failed + stats.expired + stats.cancelled
        assert (stats.queue_depth, stats.running, stats.in_flight) == (0, 0, 0)


def test_every_accepted_item_is_resolved_exactly_once_with_its_own_result(
    make_gate: Any, make_batcher: Any, spawn: Any, wait_until: Any, fake_clock: Any, make_loop: Any
) -> None:
    kit = Kit(make_gate, make_batcher, spawn, wait_until, fake_clock, [make_loop("loop-0"), make_loop("loop-1")])

    class Machine(EngineMachine):
        def __init__(self) -> None:
            super().__init__(kit)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
