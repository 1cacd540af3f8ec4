"""The batching engine's front: :class:`Batcher` (admission, outcomes, lifecycle) and the :func:`batch` decorator.

It puts together the option schema (``_options``), the request queue (``_queue``), the wait policy
(``_policy``), the workers and batch execution (``_crew``, ``_worker``, ``_execute``), coalescing
(``_coalesce``), waiters (``_waiters``) and stats (``_stats``). Every accepted request is resolved
exactly once, under the batcher's lock, by ``_finish_locked``; the README has the long form of the design.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar, Unpack, cast, overload

from . import _clock
from ._admission import call_timeout, refusal
from ._breaker import Breaker
from ._coalesce import Coalescer, Job, Ticket
from ._collate import Collate
from ._crew import Crew, replicas_of
from ._deadline import remaining
from ._decorator import decorator
from ._errors import BatcherClosed, DeadlineExceeded, MicrobatchError
from ._execute import Ended, clone
from ._fork import track_for_fork
from ._groups import GroupCosts, group_keys
from ._isolate import BatchErrors, Verdict
from ._lifecycle import Lifecycle
from ._methods import PerInstance
from ._options import OPTIONS, OnError, PlainOptions, resolve, signature
from ._policy import CostModel, WaitPolicy
from ._queue import Request, RequestQueue, Slice, as_items, measure, padded_tokens
from ._stats import Stats, StatsRecorder
from ._waiters import AsyncWaiter, CallbackWaiter, Outbox, SyncWaiter, Waiter, wait_async, wait_sync

__all__ = ["Batcher", "batch"]

T = TypeVar("T")
U = TypeVar("U")

logger = logging.getLogger("microbatch")

# A batch function: one output per item, in order; sync or ``async def``.
BatchFunction = Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]]


class Batcher(PerInstance, Lifecycle, Generic[T, U]):
    """Groups concurrent calls into batches, runs ``fn`` once per batch, and hands each caller its result.

    ``fn`` takes a list of items and returns one output per item, in order; it may be ``async def``.
    Call ``b(item)`` from any thread or ``await b.acall(item)`` from any event loop; ``b.map(items)``
    and ``await b.amap(items)`` submit many items as one request. See the README for the full
    contract: wait policy, priority, backpressure, deadlines, cancellation and error isolation.

    Every option is keyword-only and kept as a read-only attribute of the same name (options are
    fixed at construction: build a new Batcher to change one):
    """

    __slots__ = (
        *OPTIONS, "_fn", "_replicas", "_size_of", "_lock", "_queue", "_policy", "_token_cost", "_group_costs",
        "_stats", "_crew", "_coalescer", "_closing", "_exit_waiters", "_stopped", "_pending", "_breaker",
        "__weakref__",
        "__dict__",  # only for the wrapper attributes @batch copies from fn (__name__, __doc__, __wrapped__...)
    )

    @overload
    def __init__(
        self,
        fn: BatchFunction[T, U] | list[BatchFunction[T, U]] | tuple[BatchFunction[T, U], ...],
        **options: Unpack[PlainOptions],
    ) -> None:
        """``fn`` is the batch function, or a list of replicas of it (one worker each, one shared queue)."""

    @overload
    def __init__(
        self: Batcher[Any, Any],
        fn: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
        *,
        collate: Collate,
        **options: Unpack[PlainOptions],
    ) -> None:
        """With a ``collate``, ``fn`` takes its batch input (say padded tensors), not a list of items."""

    def __init__(self, fn: Callable[..., Any] | Sequence[Callable[..., Any]], **options: Any) -> None:
        self._replicas = replicas_of(fn)
        values = resolve(options)
        self._fn = fn = self._replicas[0]
        self.max_batch_size: Final[int] = values["max_batch_size"]
        self.max_wait_ms: Final[float | None] = values["max_wait_ms"]
        self.small_request_size: Final[int] = values["small_request_size"]
        self.max_queue_size: Final[int] = values["max_queue_size"]
        self.on_error: Final[OnError] = values["on_error"]
        self.aging_ms: Final[float | None] = values["aging_ms"]
        self.collate: Final[Collate | None] = values["collate"]
        self.max_batch_tokens: Final[int | None] = values["max_batch_tokens"]
        self.group_by_length: Final[bool] = values["group_by_length"]
        self.timeout: Final[float | None] = values["timeout"]
        self.on_worker_start: Final[Callable[[], object] | None] = values["on_worker_start"]
        self.max_queue_delay_ms: Final[float | None] = values["max_queue_delay_ms"]
        self.breaker_threshold: Final[int | None] = values["breaker_threshold"]
        self.breaker_open_ms: Final[float] = values["breaker_open_ms"]
        self.group_by: Final[Callable[[Any], Hashable] | None] = values["group_by"]
        self.size_of: Final[Callable[[Any], int] | None] = values["size_of"]
        self.max_concurrent_batches: Final[int] = values["max_concurrent_batches"]
        self.coalesce: Final[bool | Callable[[Any], Hashable]] = values["coalesce"]
        # These two are not Final for mypy only because protocols (the worker's Engine, _execute's
        # Outcomes) read them as plain attributes; __setattr__ refuses to change them all the same.
        self.batch_errors: BatchErrors = values["batch_errors"]
        self.name: str = values["name"] or getattr(fn, "__qualname__", None) or type(fn).__name__
        collate, budget = self.collate, self.max_batch_tokens
        self._size_of: Callable[[Any], int] | None = self.size_of or (
            collate.size if collate is not None else (len if budget is not None else None)
        )
        super().__init__()
        self._stats = StatsRecorder()
        self._policy = WaitPolicy(
            self.max_wait_ms, self.aging_ms, self.max_batch_size, len(self._replicas) * self.max_concurrent_batches
        )
        self._token_cost = CostModel()  # run time against padded tokens, for length-aware batchers
        self._group_costs = None if self.group_by is None else GroupCosts()
        self._breaker = Breaker(self.breaker_threshold, self.breaker_open_ms / 1000.0)
        self._init_state()
        track_for_fork(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._queue = RequestQueue(
            self.max_batch_size, self.small_request_size, self.max_batch_tokens, self.group_by_length,
            self._size_of is not None, self._token_cost, self._group_costs,
        )
        coalesce = self.coalesce
        self._coalescer = None if coalesce is False else Coalescer(None if coalesce is True else coalesce, self.name)
        self._closing = False
        self._crew = Crew(
            self, self._lock, self._replicas, self.collate, self.on_error == "isolate", self.on_worker_start,
            self.max_concurrent_batches,
        )
        self._exit_waiters: list[Waiter] = []
        self._stopped = False  # the worker has exited for good
        self._pending: set[Request] = set()  # accepted and unresolved: what close(timeout=...) fails at its timeout
        self._policy.reset()

    def __setattr__(self, name: str, value: Any) -> None:
        # A changed option would leave the queue, the policy and the worker built for the old value
        # (max_batch_size = 0 livelocks the worker), so options are fixed once set by __init__.
        if name in OPTIONS and hasattr(self, name):
            raise AttributeError(
                f"{name} of batcher {self.name!r} is read-only: options are fixed at construction; "
                f"build a new Batcher({name}=...) (and close this one) to change it"
            )
        object.__setattr__(self, name, value)

    def _reset_after_fork(self) -> None:
        # The parent's worker thread and callers do not exist in a forked child: start afresh there.
        closing = self._closing
        self._init_state()
        self._closing = closing

    # ------------------------------------------------------------------ public API

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` (always one item, whatever its type) in a batch; block until its result."""
        self._crew.refuse_own_thread("__call__", "acall", self.name)
        waiter = SyncWaiter()
        request, timeout = self._admit([item], True, timeout, waiter)
        return wait_sync(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch from any event loop; awaiting never blocks the loop."""
        self._crew.refuse_own_thread("acall", None, self.name)
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout = self._admit([item], True, timeout, waiter)
        return await wait_async(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    @overload
    def map(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    def map(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    def map(self, items: Iterable[T], *, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Run many items as one request (admitted whole or not at all); results in input order.

        With ``return_exceptions`` an item whose batch function call failed (after isolation) has its
        exception in its place instead of failing the whole map; errors of the map as a whole
        (Overloaded, DeadlineExceeded, BatcherClosed) are still raised.
        """
        self._crew.refuse_own_thread("map", "amap", self.name)
        batch_items = as_items(items, "map")
        if not batch_items:
            return []
        waiter = SyncWaiter()
        request, timeout = self._admit(batch_items, False, timeout, waiter, return_exceptions)
        return wait_sync(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    @overload
    async def amap(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    async def amap(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    async def amap(
        self, items: Iterable[T], *, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Async :meth:`map`."""
        self._crew.refuse_own_thread("amap", None, self.name)
        batch_items = as_items(items, "amap")
        if not batch_items:
            return []
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout = self._admit(batch_items, False, timeout, waiter, return_exceptions)
        return await wait_async(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    def submit(
        self, items: Iterable[T], callback: Callable[[list[U] | None, BaseException | None], object], *,
        timeout: float | None = None, return_exceptions: bool = False,
    ) -> Callable[[], None]:
        """Queue ``items`` as one request, as :meth:`map` does, without waiting; returns a function that cancels it.

        ``callback(results, None)`` or ``callback(None, error)`` runs exactly once, on an engine thread
        (usually the worker's, sometimes with the batcher's lock held): it must be quick, must not block
        and must not call this batcher. Refusals (Overloaded, BatcherClosed, ValueError...) raise here,
        as they do for ``map``. A request past its deadline is never run: it fails with DeadlineExceeded
        when the worker next forms a batch (no timer fires at the deadline itself). Cancelling a request
        not yet resolved gives its callback ``asyncio.CancelledError``. ``return_exceptions`` works as it
        does for ``map``: the results hold a failed item's exception in its place. For code that feeds a
        batcher from its own loop, such as :mod:`microbatch.remote`'s host; everyone else calls
        ``map``/``amap``.
        """
        batch_items = as_items(items, "submit")
        if not batch_items:
            callback([], None)
            return _nothing
        request, _ = self._admit(batch_items, False, timeout, CallbackWaiter(callback), return_exceptions)
        return functools.partial(self._cancel, request)

    def submit_many(
        self,
        requests: Iterable[
            tuple[Iterable[T], Callable[[list[U] | None, BaseException | None], object], float | None, bool]
        ],
    ) -> list[Callable[[], None] | Exception]:
        """:meth:`submit` for many ``(items, callback, timeout, return_exceptions)`` requests at once, under
        one hold of the lock.

        The worker wakes once and finds them all queued, instead of dispatching the first while the rest
        are still being submitted. Returns, for each request in order, its cancel function or the
        exception that refused it (returned, not raised: the others are queued all the same).
        """
        outcomes: list[Callable[[], None] | Exception] = []
        prepared: list[tuple[int, Request, list[Hashable] | None]] = []
        for items, callback, timeout, return_exceptions in requests:
            try:
                batch_items = as_items(items, "submit_many")
                if not batch_items:
                    callback([], None)
                    outcomes.append(_nothing)
                    continue
                request, _, same = self._prepare(
                    batch_items, False, timeout, CallbackWaiter(callback), return_exceptions
                )
            except Exception as exc:
                outcomes.append(exc)
                continue
            prepared.append((len(outcomes), request, same))
            outcomes.append(functools.partial(self._cancel, request))
        with self._lock:
            for index, request, same in prepared:
                try:
                    self._enqueue_locked(request, same)
                except Exception as exc:
                    outcomes[index] = exc
        return outcomes

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of counters and recent timings."""
        with self._lock:
            breaker = self._breaker.report(_clock.now())
            return self._stats.snapshot(self.name, self._queue.depth, self._stats.running, self._policy.cost, breaker)

    def __repr__(self) -> str:
        if not hasattr(self, "_lock"):
            return "<Batcher (constructor failed)>"  # debuggers and pytest repr half-built objects
        return (
            f"<Batcher {self.name!r} {self._crew.state(self._closing)} max_batch_size={self.max_batch_size} "
            f"max_wait_ms={self.max_wait_ms} queued={self._queue.depth} running={self._stats.running} "
            f"batches={self._stats.batches} completed={self._stats.completed}>"
        )

    # ------------------------------------------------------------------ admission and outcomes

    def _admit(
        self, items: list[Any], single: bool, timeout: float | None, waiter: Waiter, return_exceptions: bool = False
    ) -> tuple[Request, float | None]:
        """Queue ``items`` as one request, or raise why not; returns it and the call's effective timeout."""
        request, timeout, same = self._prepare(items, single, timeout, waiter, return_exceptions)
        with self._lock:
            self._enqueue_locked(request, same)
        return request, timeout

    def _prepare(
        self, items: list[Any], single: bool, timeout: float | None, waiter: Waiter, return_exceptions: bool = False
    ) -> tuple[Request, float | None, list[Hashable] | None]:
        """The checks that need no lock: ``items`` as a request (and its coalescing keys), or raise why not."""
        timeout = remaining(self.timeout) if timeout is None else call_timeout(timeout, self.timeout)
        n = len(items)
        now = _clock.now()
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                self._count_rejected(n)
                raise DeadlineExceeded(f"the call to batcher {self.name!r} had no time left (timeout={timeout:.3g}s)")
            deadline = now + timeout
        if n > self.max_queue_size:
            self._count_rejected(n)
            raise ValueError(
                f"a map of {n} items can never fit batcher {self.name!r}'s max_queue_size={self.max_queue_size}; "
                "split it into smaller maps or raise max_queue_size"
            )
        size_of, coalescer = self._size_of, self._coalescer
        try:
            tokens = None if size_of is None else measure(size_of, items, self.max_batch_tokens, self.name)
            keys = None if self.group_by is None else group_keys(self.group_by, items, self.name)
        except Exception:
            self._count_rejected(n)  # ItemTooLarge, or a size or key function that failed: refused like any other
            raise
        same = None if coalescer is None else coalescer.keys(items)  # what makes items identical
        request = (Request if coalescer is None else Ticket)(items, single, deadline, now, waiter, tokens, keys)
        request.return_exceptions = return_exceptions
        return request, timeout, same

    def _enqueue_locked(self, request: Request, same: list[Hashable] | None) -> None:
        """Queue a prepared request (*locked*), or raise why not (closed, breaker open, queue full)."""
        n, now, coalescer = request.size, request.arrival, self._coalescer
        queue, policy, crew = self._queue, self._policy, self._crew
        if self._closing:
            self._stats.rejected += n
            raise BatcherClosed(f"batcher {self.name!r} is closed and accepts no calls")
        fresh = n if same is None else cast(Coalescer, coalescer).fresh(same)  # items that take queue space
        running, breaker = self._stats.running, self._breaker
        refused = (None if breaker.clean else breaker.refusal(
            now, self.name, n, queue.depth + running, self.max_batch_size
        )) or (None if queue.depth + fresh <= self.max_queue_size and self.max_queue_delay_ms is None else refusal(
            policy, queue.depth, running, fresh, self.max_queue_size, self.max_queue_delay_ms, self.name
        ))
        if refused is not None:
            self._stats.rejected += n
            raise refused
        if not crew.started:
            crew.start(self.name)
        self._pending.add(request)
        queued = request if same is None else cast(Coalescer, coalescer).admit(cast(Ticket, request), same)
        self._stats.submitted += n
        self._stats.coalesced += n - fresh
        if queued is not None:
            queue.push(queued, now if queued.size <= self.small_request_size else now + policy.aging())
            policy.arrived(now, fresh)
            crew.wake()

    def _count_rejected(self, n: int) -> None:
        with self._lock:
            self._stats.rejected += n

    def _expire(self, request: Request) -> None:
        with self._lock:
            self._expire_locked(request)

    def _expire_locked(self, request: Request) -> None:
        self._finish_locked(request, None, DeadlineExceeded(self._expired_message(request)), "expired")

    def _cancel(self, request: Request) -> None:
        with self._lock:
            self._finish_locked(request, None, asyncio.CancelledError(), "cancelled")

    def _expired_message(self, request: Request) -> str:
        what = "call" if request.single else f"map of {request.size} items"
        state = "before it was dispatched" if request.cursor == 0 else "while it ran"
        if isinstance(request, (Ticket, Job)):
            state = "before its coalesced result was ready"
        return f"the {what} to batcher {self.name!r} passed its deadline {state}"

    def _finish_locked(
        self, request: Request, value: Any, exc: BaseException | None, outcome: str, outbox: Outbox | None = None
    ) -> bool:
        """Resolve ``request`` unless it already is; the single place results and errors are decided.

        With an ``outbox`` the hand-over to the caller is deferred to :func:`send`, after the lock is
        released, so woken callers do not queue up on the lock while a whole batch is delivered.
        """
        if request.done:
            return False
        request.done = True
        coalescer = self._coalescer
        dispatched = request.cursor if coalescer is None else coalescer.dispatched(request)
        self._queue.discard(request)
        self._pending.discard(request)
        if coalescer is not None and coalescer.finishing(request, exc, outcome, self._finish_locked, outbox):
            return True  # a job: its callers were resolved (or left) one by one
        if request.failed:  # a map with return_exceptions: its failed items count as failed
            self._stats.resolved("failed", request.failed, 0)
        self._stats.resolved(outcome, request.size - request.failed, max(0, dispatched - request.failed))
        if outbox is None:
            request.waiter.resolve(value, exc)
        else:
            outbox.append((request.waiter, value, exc))
        return True

    # ------------------------------------------------------------------ lifecycle and what the worker reports

    def _begin_close(self, drain: bool, why: str = "closed") -> list[threading.Thread]:
        with self._lock:
            self._closing = True
            if not drain:
                self._drop_queued_locked(
                    lambda: BatcherClosed(f"batcher {self.name!r} {why} before this call ran"), "cancelled"
                )
            self._crew.wake_all()
            return self._crew.threads()

    def _drop_queued_locked(self, error: Callable[[], BaseException], outcome: str) -> None:
        for request in self._queue.drain():
            self._finish_locked(request, None, error(), outcome)

    def _plan_locked(self) -> tuple[list[Slice] | None, float | None]:
        """What the worker does next, supervised: a fault in planning fails what is queued, never the worker."""
        try:
            return self._next_batch_locked()
        except Exception as exc:
            logger.exception("microbatch: internal error while forming a batch in %r", self.name)
            message = f"internal error in batcher {self.name!r}: {exc!r}"
            self._drop_queued_locked(lambda: MicrobatchError(message), "failed")
            return None, (0.0 if self._closing else None)

    def _next_batch_locked(self) -> tuple[list[Slice] | None, float | None]:
        """A batch to run, or how long to sleep (None: until woken); ``(None, 0.0)``: the worker should exit."""
        queue, policy = self._queue, self._policy
        while True:
            now = _clock.now()
            if queue.depth == 0:
                policy.dispatched()
                queue.clear()  # only dead entries remain: every live one has queued items
                return None, (0.0 if self._closing else None)
            groups = self._group_costs  # the wait for company reads the cost of the group that will run
            reason, delay = policy.why_now(
                now, queue.depth, queue.max_batch_tokens is not None and queue.budget_full(), self._closing,
                queue.oldest_arrival,
                None if groups is None else groups.batch_cost(queue.next_key()),
            )
            if reason is None:
                return None, delay
            policy.dispatched()
            batch, expired, real, padded = queue.take(now)
            for request in expired:
                self._expire_locked(request)
            if batch:
                stats = self._stats
                running = 0
                for request, start, stop in batch:
                    stats.queue_wait.add(now - request.arrival)
                    running += stop - start
                stats.running += running
                stats.reasons[reason] += 1
                stats.real_tokens += real
                stats.padded_tokens += padded
                if queue.depth:
                    self._crew.wake()  # another worker with a free slot may take the rest
                return batch, None
            # Everything at the top had expired or been resolved: plan again.

    def _live(self, part: list[Slice]) -> list[Slice]:
        now = _clock.now()
        for request, _, _ in part:
            if request.done or (request.deadline is not None and now >= request.deadline):
                break
        else:
            # All live, read without the lock: one resolved just after this is no different from one
            # resolved just after the lock's release, and its outcome is decided once either way.
            return part
        live: list[Slice] = []
        with self._lock:
            for slice_ in part:
                request = slice_[0]
                if request.deadline is not None and now >= request.deadline:
                    self._expire_locked(request)  # a no-op if it was resolved already
                elif not request.done:
                    live.append(slice_)
        return live

    def _ran(self, n: int, seconds: float) -> None:
        with self._lock:
            self._stats.ran(n, seconds)

    def _complete(
        self, part: list[Slice], values: list[Any], seconds: float, outbox: Outbox, ended: Ended | None
    ) -> None:
        with self._lock:
            self._stats.ran(len(values), seconds)
            self._policy.cost.add(len(values), seconds)  # only successful runs describe the function's cost
            padded = None
            if self._size_of is not None:
                padded = padded_tokens(part)
                self._token_cost.add(padded, seconds)
            if self._group_costs is not None:
                first, start, _ = part[0]  # a batch holds one group: its first item's key is the batch's
                self._group_costs.add(cast("list[Hashable]", first.keys)[start], len(values), seconds, padded)
            offset = 0
            for request, start, stop in part:
                if request.single:
                    self._finish_locked(request, values[offset], None, "completed", outbox)
                elif type(request) is Job:
                    cast(Coalescer, self._coalescer).deliver(
                        request, start, stop, values, offset, self._finish_locked, outbox
                    )
                elif not request.done and request.fill(start, stop, values, offset):
                    self._finish_locked(request, request.results, None, "completed", outbox)
                offset += stop - start
            if ended is not None:
                self._batch_done_locked(ended[0], "ok", ended[1])

    def _fail(self, part: list[Slice], exc: BaseException, outbox: Outbox) -> None:
        mark = len(outbox)  # the worker's outbox may still hold earlier parts' outcomes
        with self._lock:
            for request, start, stop in part:
                if type(request) is Job:
                    cast(Coalescer, self._coalescer).fail(request, start, stop, exc, self._finish_locked, outbox)
                    continue
                if request.done:
                    continue
                if request.return_exceptions:
                    request.failed += stop - start
                    if request.fill(start, stop, [clone(exc) for _ in range(start, stop)], 0):
                        self._finish_locked(request, request.results, None, "completed", outbox)
                else:
                    # Each caller raises its own copy so tracebacks do not pile up on one shared object.
                    self._finish_locked(request, None, clone(exc) if len(outbox) > mark else exc, "failed", outbox)

    def _batch_done(self, batch: list[Slice], verdict: Verdict, retries: int) -> None:
        with self._lock:
            self._batch_done_locked(batch, verdict, retries)

    def _batch_done_locked(self, batch: list[Slice], verdict: Verdict, retries: int) -> None:
        stats = self._stats
        for _, start, stop in batch:  # a loop, not sum() over a generator: this runs after every batch
            stats.running -= stop - start
        stats.retries += retries
        if self._breaker.threshold is None or (verdict == "ok" and self._breaker.clean):
            return  # nothing for the breaker to decide, and no clock to read
        now = _clock.now()
        if self._breaker.ended(now, verdict):
            error = self._breaker.open_error(now, self.name)
            logger.warning("microbatch: %s; failing the %d queued items", error, self._queue.depth)
            self._drop_queued_locked(lambda: clone(error), "failed")

    def _worker_exited(self) -> None:
        with self._lock:
            if not self._crew.exited():
                return
            self._stopped = True
            waiters, self._exit_waiters = self._exit_waiters, []
            for waiter in waiters:
                waiter.resolve(None, None)


def _nothing() -> None:
    """The cancel function of an empty submission: there is nothing to cancel."""


Batcher.__doc__ = (Batcher.__doc__ or "") + "".join(
    f"\n    * ``{name}`` (default ``{option.default!r}``): {option.doc}." for name, option in OPTIONS.items()
)
Batcher.__init__.__signature__ = signature("self", "fn")  # type: ignore[attr-defined]


batch = decorator(Batcher)
