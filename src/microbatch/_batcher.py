"""The batching engine's front: :class:`Batcher` (admission, outcomes, lifecycle) and the :func:`batch` decorator.

It puts together the option schema (``_options``), the request queue (``_queue``), the wait policy
(``_policy``), the worker and batch execution (``_worker``, ``_execute``), waiters (``_waiters``) and
stats (``_stats``). Every accepted request is resolved exactly once, under the batcher's lock, by
``_finish_locked``; the README has the long form of the design.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, Unpack, cast, overload

from . import _clock
from ._collate import Collate
from ._deadline import remaining
from ._errors import BatcherClosed, DeadlineExceeded, MicrobatchError, Overloaded
from ._execute import clone
from ._methods import PerInstance
from ._options import OPTIONS, BatcherOptions, OnError, PlainOptions, resolve, signature
from ._policy import CostModel, WaitPolicy
from ._queue import Request, RequestQueue, Slice, measure, padded_tokens
from ._stats import Stats, StatsRecorder
from ._waiters import AsyncWaiter, CallbackWaiter, Outbox, SyncWaiter, Waiter, send, wait_async, wait_sync
from ._worker import Worker, track_for_fork

__all__ = ["Batcher", "batch"]

T = TypeVar("T")
U = TypeVar("U")

logger = logging.getLogger("microbatch")


class Batcher(PerInstance, Generic[T, U]):
    """Groups concurrent calls into batches, runs ``fn`` once per batch, and hands each caller its result.

    ``fn`` takes a list of items and returns one output per item, in order; it may be ``async def``.
    Call ``b(item)`` from any thread or ``await b.acall(item)`` from any event loop; ``b.map(items)``
    and ``await b.amap(items)`` submit many items as one request. See the README for the full
    contract: wait policy, priority, backpressure, deadlines, cancellation and error isolation.

    Every option is keyword-only and kept as a read-only attribute of the same name:
    """

    __slots__ = (
        *OPTIONS, "_fn", "_size_of", "_lock", "_queue", "_policy", "_token_cost", "_stats", "_worker", "_running",
        "_closing", "_exit_waiters", "_stopped", "__weakref__",
    )

    @overload
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]],
        **options: Unpack[PlainOptions],
    ) -> None: ...

    @overload
    def __init__(
        self: Batcher[Any, Any], fn: Callable[[Any], Any], *, collate: Collate, **options: Unpack[PlainOptions]
    ) -> None:
        """With a ``collate``, ``fn`` takes its batch input (say padded tensors), not a list of items."""

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        if not callable(fn):
            raise TypeError(f"Batcher needs a callable batch function, got {type(fn).__name__}: pass fn=your_function")
        values = resolve(options)
        self._fn = fn
        self.max_batch_size: int = values["max_batch_size"]
        self.max_wait_ms: float | None = values["max_wait_ms"]
        self.small_request_size: int = values["small_request_size"]
        self.max_queue_size: int = values["max_queue_size"]
        self.on_error: OnError = values["on_error"]
        self.aging_ms: float | None = values["aging_ms"]
        self.collate: Collate | None = values["collate"]
        self.max_batch_tokens: int | None = values["max_batch_tokens"]
        self.group_by_length: bool = values["group_by_length"]
        self.timeout: float | None = values["timeout"]
        self.on_worker_start: Callable[[], object] | None = values["on_worker_start"]
        self.name: str = values["name"] or getattr(fn, "__qualname__", None) or type(fn).__name__
        collate, budget = self.collate, self.max_batch_tokens
        self._size_of: Callable[[Any], int] | None = (
            collate.size if collate is not None else (len if budget is not None else None)
        )
        super().__init__()
        self._stats = StatsRecorder()
        self._policy = WaitPolicy(self.max_wait_ms, self.aging_ms, self.max_batch_size)
        self._token_cost = CostModel()  # run time against padded tokens, for length-aware batchers
        self._init_state()
        track_for_fork(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._queue = RequestQueue(
            self.max_batch_size, self.small_request_size, self.max_batch_tokens, self.group_by_length,
            self._size_of is not None, self._token_cost,
        )
        self._running = 0  # items in the batch being run
        self._closing = False
        self._worker = Worker(
            self, self._lock, self._fn, self.collate, self.on_error == "isolate", self.on_worker_start
        )
        self._exit_waiters: list[Waiter] = []
        self._stopped = False  # the worker has exited for good
        self._policy.reset()

    def _reset_after_fork(self) -> None:
        # The parent's worker thread and callers do not exist in a forked child: start afresh there.
        closing = self._closing
        self._init_state()
        self._closing = closing

    # ------------------------------------------------------------------ public API

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` (always one item, whatever its type) in a batch; block until its result."""
        self._worker.refuse_own_thread("__call__", "acall", self.name)
        waiter = SyncWaiter()
        request, timeout = self._admit([item], True, timeout, waiter)
        return wait_sync(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch from any event loop; awaiting never blocks the loop."""
        self._worker.refuse_own_thread("acall", None, self.name)
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout = self._admit([item], True, timeout, waiter)
        return await wait_async(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    def map(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Run many items as one request (admitted whole or not at all); results in input order."""
        self._worker.refuse_own_thread("map", "amap", self.name)
        batch_items = list(items)
        if not batch_items:
            return []
        waiter = SyncWaiter()
        request, timeout = self._admit(batch_items, False, timeout, waiter)
        return wait_sync(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    async def amap(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Async :meth:`map`."""
        self._worker.refuse_own_thread("amap", None, self.name)
        batch_items = list(items)
        if not batch_items:
            return []
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout = self._admit(batch_items, False, timeout, waiter)
        return await wait_async(waiter, timeout, self._expire, self._cancel, request)  # type: ignore[no-any-return]

    def submit(
        self, items: Iterable[T], callback: Callable[[list[U] | None, BaseException | None], object], *,
        timeout: float | None = None,
    ) -> Callable[[], None]:
        """Queue ``items`` as one request, as :meth:`map` does, without waiting; returns a function that cancels it.

        ``callback(results, None)`` or ``callback(None, error)`` runs exactly once, on an engine thread
        (usually the worker's, sometimes with the batcher's lock held): it must be quick, must not block
        and must not call this batcher. Refusals (Overloaded, BatcherClosed, ValueError...) raise here,
        as they do for ``map``. A request past its deadline is never run: it fails with DeadlineExceeded
        when the worker next forms a batch (no timer fires at the deadline itself). Cancelling a request
        not yet resolved gives its callback ``asyncio.CancelledError``. For code that feeds a batcher from
        its own loop, such as :mod:`microbatch.remote`'s host; everyone else calls ``map``/``amap``.
        """
        batch_items = list(items)
        if not batch_items:
            callback([], None)
            return _nothing
        request, _ = self._admit(batch_items, False, timeout, CallbackWaiter(callback))
        return functools.partial(self._cancel, request)

    def start(self) -> None:
        """Start the worker now instead of at the first call (it also starts by itself)."""
        with self._lock:
            if self._closing:
                raise BatcherClosed(f"batcher {self.name!r} is closed; create a new Batcher")
            if self._worker.thread is None:
                self._worker.start(self.name)

    def close(self, drain: bool = True) -> None:
        """Stop accepting calls; with ``drain`` run what is queued, else fail it with BatcherClosed.

        Blocks until the worker has stopped.
        """
        thread = self._begin_close(drain)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    async def aclose(self, drain: bool = True) -> None:
        """Async :meth:`close`: awaits the worker's exit without blocking the loop."""
        thread = self._begin_close(drain)
        if thread is None or thread is threading.current_thread():
            return
        waiter = AsyncWaiter(asyncio.get_running_loop())
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._exit_waiters.append(waiter)
        if not stopped:
            await asyncio.shield(waiter.future)
        # The worker signals its exit as its last act: this join is immediate, and after it the thread is gone.
        thread.join()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`aclose` has been called."""
        return self._closing

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of counters and recent timings."""
        with self._lock:
            return self._stats.snapshot(self.name, self._queue.depth, self._running, self._policy.cost)

    def __enter__(self) -> Batcher[T, U]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(drain=True)

    async def __aenter__(self) -> Batcher[T, U]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose(drain=True)

    def __repr__(self) -> str:
        if not hasattr(self, "_lock"):
            return "<Batcher (constructor failed)>"  # debuggers and pytest repr half-built objects
        thread = self._worker.thread
        if self._closing:
            state = "closed" if thread is None or not thread.is_alive() else "closing"
        else:
            state = "running" if thread is not None else "idle"
        return (
            f"<Batcher {self.name!r} {state} max_batch_size={self.max_batch_size} "
            f"max_wait_ms={self.max_wait_ms} queued={self._queue.depth} running={self._running} "
            f"batches={self._stats.batches} completed={self._stats.completed}>"
        )

    # ------------------------------------------------------------------ admission and outcomes

    def _admit(
        self, items: list[Any], single: bool, timeout: float | None, waiter: Waiter
    ) -> tuple[Request, float | None]:
        """Queue ``items`` as one request, or raise why not; returns it and the call's effective timeout."""
        timeout = remaining(self.timeout if timeout is None else timeout)
        n = len(items)
        now = _clock.now()
        deadline = None
        if timeout is not None:
            if timeout != timeout:  # NaN compares false with everything, so it would never expire
                raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
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
        size_of = self._size_of
        tokens = None if size_of is None else measure(size_of, items, self.max_batch_tokens, self.name)
        request = Request(items, single, deadline, now, waiter, tokens)
        with self._lock:
            queue, policy, worker = self._queue, self._policy, self._worker
            if self._closing:
                self._stats.rejected += n
                raise BatcherClosed(f"batcher {self.name!r} is closed and accepts no calls")
            if queue.depth + n > self.max_queue_size:
                self._stats.rejected += n
                retry_after = policy.retry_after(queue.depth + n - self.max_queue_size)
                raise Overloaded(
                    f"batcher {self.name!r} has {queue.depth} items queued (max_queue_size={self.max_queue_size}); "
                    f"retry in {retry_after:.3g}s",
                    retry_after=retry_after,
                )
            if worker.thread is None:
                worker.start(self.name)
            queue.push(request, now if n <= self.small_request_size else now + policy.aging())
            self._stats.submitted += n
            policy.arrived(now, n)
            if worker.waiting:
                worker.wake()
        return request, timeout

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
        self._queue.discard(request)
        self._stats.resolved(outcome, request.size)
        if outbox is None:
            request.waiter.resolve(value, exc)
        else:
            outbox.append((request.waiter, value, exc))
        return True

    # ------------------------------------------------------------------ lifecycle and what the worker reports

    def _begin_close(self, drain: bool) -> threading.Thread | None:
        with self._lock:
            self._closing = True
            if not drain:
                self._drop_queued_locked(
                    lambda: BatcherClosed(f"batcher {self.name!r} closed before this call ran"), "cancelled"
                )
            worker = self._worker
            if worker.waiting:
                worker.wake()
            return worker.thread

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
            if not self._closing and queue.depth < self.max_batch_size:
                delay = policy.company_delay(now, queue.oldest_arrival)
                if delay > 0:
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
                self._running = running
                stats.real_tokens += real
                stats.padded_tokens += padded
                return batch, None
            # Everything at the top had expired or been resolved: plan again.

    def _live(self, part: list[Slice]) -> list[Slice]:
        now = _clock.now()
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

    def _complete(self, part: list[Slice], values: list[Any], seconds: float) -> None:
        outbox: Outbox = []
        with self._lock:
            self._policy.cost.add(len(values), seconds)  # only successful runs describe the function's cost
            if self._size_of is not None:
                self._token_cost.add(padded_tokens(part), seconds)
            offset = 0
            for request, start, stop in part:
                if request.single:
                    self._finish_locked(request, values[offset], None, "completed", outbox)
                elif not request.done and request.fill(start, stop, values, offset):
                    self._finish_locked(request, request.results, None, "completed", outbox)
                offset += stop - start
        send(outbox)

    def _fail(self, part: list[Slice], exc: BaseException) -> None:
        outbox: Outbox = []
        with self._lock:
            for request, _, _ in part:
                if not request.done:
                    # Each caller raises its own copy so tracebacks do not pile up on one shared object.
                    self._finish_locked(request, None, clone(exc) if outbox else exc, "failed", outbox)
        send(outbox)

    def _batch_done(self) -> None:
        with self._lock:
            self._running = 0

    def _worker_exited(self) -> None:
        with self._lock:
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


def batch(**options: Unpack[BatcherOptions]) -> Callable[[Callable[..., Any]], Batcher[Any, Any]]:
    """Decorator form of :class:`Batcher`, taking the same keyword arguments.

    On a function it returns a :class:`Batcher`; on a method, each instance gets its own batcher the
    first time the attribute is read (so ``self`` is bound and instances never share batches).
    """

    def decorate(fn: Callable[..., Any]) -> Batcher[Any, Any]:
        # Typed loosely: a method takes (self, items) until the instance binds it; the options pass
        # through whichever overload they fit.
        return Batcher(fn, **cast(dict[str, Any], options))

    return decorate
