"""The batching engine: :class:`Batcher` and the :func:`batch` decorator.

Design in brief (the README has the long form):

* One long-lived worker per batcher, in a named daemon thread, owns the batch function. A sync
  function runs on that thread; an ``async def`` runs on an event loop the thread owns. Callers never
  run the function, so Flask/Django threads, ASGI loops and ``async_to_sync`` one-off loops can share a
  batcher.
* Callers block on (or await) a waiter that the worker resolves: a released lock for threads, a
  ``call_soon_threadsafe`` on the caller's own loop for coroutines.
* Queued requests sit in a min-heap keyed ``(virtual arrival, sequence)``. A small request's key is
  its arrival; a large request's is its arrival plus the aging delay, so small requests go first,
  equals are FIFO, and a large request is never overtaken by a small one that arrived more than the
  aging delay after it. Cancelled and expired requests are removed lazily when they reach the top.
* Every accepted request is resolved exactly once, under the batcher's lock, by ``_finish_locked``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import heapq
import inspect
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack, cast, overload

from ._deadline import remaining
from ._collate import Collate
from ._errors import BatcherClosed, BatchSizeMismatch, DeadlineExceeded, ItemTooLarge, MicrobatchError, Overloaded
from ._policy import ArrivalRate, CostModel
from ._stats import Stats, TimingRecorder

__all__ = ["Batcher", "batch"]

T = TypeVar("T")
U = TypeVar("U")

OnError = Literal["isolate", "fail_batch"]

logger = logging.getLogger("microbatch")
_clock = time.monotonic
_STATS_WINDOW = 1024
_MIN_AGING = 0.05
_MAX_AGING = 10.0
_AGING_BATCHES = 16
_MIN_QUIET = 1e-3  # thread wake-ups and HTTP parsing spread a returning burst over about this much
_SMALL_RIDE = 0.75  # the share of max_batch_size a batch carrying small requests fills with large ones
_MAX_SLEEP = 3600.0  # a longer wait (max_wait_ms=inf) is taken in steps: sleep APIs overflow past TIMEOUT_MAX


class _SyncWaiter:
    """A one-shot result slot a thread blocks on; a plain lock is the cheapest thread hand-off."""

    __slots__ = ("_lock", "value", "exc")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.value: Any = None
        self.exc: BaseException | None = None

    def resolve(self, value: Any, exc: BaseException | None) -> None:
        self.value = value
        self.exc = exc
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else min(max(timeout, 0.0), threading.TIMEOUT_MAX))


class _AsyncWaiter:
    """A one-shot result slot on the caller's own event loop, whichever loop that is."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def resolve(self, value: Any, exc: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, value, exc)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is left to tell


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    # The caller may have been cancelled meanwhile; a result must never land on a done future.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


_Waiter = _SyncWaiter | _AsyncWaiter
_Outbox = list[tuple[_Waiter, Any, "BaseException | None"]]


def _send(outbox: _Outbox) -> None:
    """Hand decided outcomes to their callers: one loop wake-up per event loop, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for waiter, value, exc in outbox:
        if isinstance(waiter, _AsyncWaiter):
            by_loop.setdefault(waiter.loop, []).append((waiter.future, value, exc))
        else:
            waiter.resolve(value, exc)
    for loop, settlements in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settlements)
        except RuntimeError:
            pass  # that loop is closed: its callers are gone


def _settle_all(settlements: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, exc in settlements:
        _settle(future, value, exc)


class _Request:
    """One call (a single item) or one map (many items); the unit of priority and of resolution."""

    __slots__ = (
        "items", "single", "size", "cursor", "pending", "results", "deadline", "arrival", "waiter", "done", "tokens",
    )

    def __init__(
        self,
        items: list[Any],
        single: bool,
        deadline: float | None,
        arrival: float,
        waiter: _Waiter,
        tokens: list[int] | None,
    ) -> None:
        self.items = items
        self.tokens = tokens  # each item's length, when the batcher is length-aware
        self.single = single
        self.size = len(items)
        self.cursor = 0  # items before it have been dispatched
        self.pending = self.size  # items without an output yet
        self.results: list[Any] | None = None if single else [None] * self.size
        self.deadline = deadline
        self.arrival = arrival
        self.waiter = waiter
        self.done = False


# A run of one request's items inside a batch: (request, start, stop).
_Slice = tuple[_Request, int, int]
# What the worker reports back for one call of the batch function: (ok, output or exception, seconds).
_Outcome = tuple[bool, Any, float]

_registry: weakref.WeakSet[Batcher[Any, Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for b in list(_registry):
        b._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Options(TypedDict, total=False):
    max_batch_size: int
    max_wait_ms: float | None
    small_request_size: int
    max_queue_size: int
    on_error: OnError
    name: str | None
    aging_ms: float | None
    max_batch_tokens: int | None
    group_by_length: bool
    timeout: float | None
    on_worker_start: Callable[[], object] | None


class BatcherOptions(_Options, total=False):
    """The keyword arguments of :class:`Batcher` (and :func:`batch`), for typed pass-through."""

    collate: Collate | None


class Batcher(Generic[T, U]):
    """Groups concurrent calls into batches, runs ``fn`` once per batch, and hands each caller its result.

    ``fn`` takes a list of items and returns one output per item, in order; it may be ``async def``.
    Call ``b(item)`` from any thread or ``await b.acall(item)`` from any event loop; ``b.map(items)``
    and ``await b.amap(items)`` submit many items as one request. See the README for the full
    contract: wait policy, priority, backpressure, deadlines, cancellation and error isolation.

    Attributes are read-only after construction:

    * ``max_batch_size``: most items passed to one call of ``fn``.
    * ``max_wait_ms``: ``None`` adapts (waits only when the measured cost model says it pays), ``0``
      never waits, a positive value waits up to that long after the oldest queued item arrived.
    * ``small_request_size``: requests of at most this many items are served ahead of larger ones.
    * ``max_queue_size``: most items that may wait; beyond it calls raise :class:`Overloaded`.
    * ``on_error``: ``"isolate"`` finds the failing items by bisection; ``"fail_batch"`` fails all.
    * ``aging_ms``: how long a large request yields to small ones; ``None`` is 16 full-batch run times.
    * ``collate``: a :class:`~microbatch.Collate` that builds ``fn``'s input from the items and splits
      its output back (see :mod:`microbatch.tensors`); its ``size`` makes the batcher length-aware.
    * ``max_batch_tokens``: the most ``longest item × items`` one batch may hold (needs item sizes:
      ``collate.size``, else ``len(item)``); an item longer than that is refused with ItemTooLarge.
    * ``group_by_length``: when length-aware, fill each batch with items of similar length.
    * ``timeout``: the default timeout, in seconds, of calls that pass none (``None``: no limit).
    * ``on_worker_start``: called with no arguments on the worker thread when it starts, before the
      first batch: per-thread setup of the model's runtime (``torch.set_num_threads(n)``: torch's
      thread settings are per thread). If it raises, the error is logged and the worker serves anyway.
    """

    __slots__ = (
        "_fn", "_is_async", "max_batch_size", "max_wait_ms", "small_request_size", "max_queue_size",
        "on_error", "aging_ms", "name",
        "_lock", "_cond", "_heap", "_seq", "_depth", "_running", "_closing", "_thread",
        "_waiting", "_wake", "_exit_waiters", "_stopped", "_wait_started", "_last_arrival", "_burst_gap", "_cost", "_arrivals",
        "_submitted", "_completed", "_failed", "_rejected", "_expired", "_cancelled", "_batches",
        "_items_run", "_sizes", "_queue_wait", "_run_time", "_attr_name", "__weakref__",
        "collate", "max_batch_tokens", "group_by_length", "timeout", "_small_ride", "_size_of", "_real_tokens", "_padded_tokens", "_token_cost",
        "on_worker_start",
    )

    @overload
    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]],
        **options: Unpack[_Options],
    ) -> None: ...

    @overload
    def __init__(self: Batcher[Any, Any], fn: Callable[[Any], Any], *, collate: Collate, **options: Unpack[_Options]) -> None:
        """With a ``collate``, ``fn`` takes its batch input (say padded tensors), not a list of items."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float | None = None,
        small_request_size: int = 4,
        max_queue_size: int = 10_000,
        on_error: OnError = "isolate",
        name: str | None = None,
        aging_ms: float | None = None,
        collate: Collate | None = None,
        max_batch_tokens: int | None = None,
        group_by_length: bool = True,
        timeout: float | None = None,
        on_worker_start: Callable[[], object] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Batcher needs a callable batch function, got {type(fn).__name__}: pass fn=your_function")
        _check_int("max_batch_size", max_batch_size, 1)
        _check_int("small_request_size", small_request_size, 0)
        _check_int("max_queue_size", max_queue_size, 1)
        if max_queue_size < max_batch_size:
            raise ValueError(
                f"max_queue_size ({max_queue_size}) must be at least max_batch_size ({max_batch_size}): "
                "raise max_queue_size or lower max_batch_size"
            )
        _check_ms("max_wait_ms", max_wait_ms)
        _check_ms("aging_ms", aging_ms)
        if on_error not in ("isolate", "fail_batch"):
            raise ValueError(f"on_error must be 'isolate' or 'fail_batch', got {on_error!r}")
        if collate is not None and not isinstance(collate, Collate):
            raise TypeError(
                f"collate must have size(item), collate(items) and split(output, items) methods, got {collate!r}; "
                "see microbatch.tensors.PadCollate"
            )
        if max_batch_tokens is not None:
            _check_int("max_batch_tokens", max_batch_tokens, 1)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout must be None or a number of seconds > 0, got {timeout!r}")
        if on_worker_start is not None and not callable(on_worker_start):
            raise TypeError(
                f"on_worker_start must be a function taking no arguments (or None), got {type(on_worker_start).__name__}"
            )
        self.on_worker_start = on_worker_start
        self._fn = fn
        self._is_async = _is_async_callable(fn)
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.small_request_size = small_request_size
        self.max_queue_size = max_queue_size
        self.on_error: OnError = on_error
        self.aging_ms = aging_ms
        self.timeout = timeout
        self._small_ride = max(1, math.ceil(_SMALL_RIDE * max_batch_size))
        self.collate = collate
        self.max_batch_tokens = max_batch_tokens
        self.group_by_length = group_by_length
        self._size_of: Callable[[Any], int] | None = (
            collate.size if collate is not None else (len if max_batch_tokens is not None else None)
        )
        self._real_tokens = self._padded_tokens = 0
        self.name = name if name is not None else getattr(fn, "__qualname__", None) or type(fn).__name__
        self._attr_name: str | None = None
        self._sizes: dict[int, int] = {}
        self._init_state()
        self._submitted = self._completed = self._failed = self._rejected = 0
        self._expired = self._cancelled = self._batches = self._items_run = 0
        self._queue_wait = TimingRecorder(_STATS_WINDOW)
        self._run_time = TimingRecorder(_STATS_WINDOW)
        self._cost = CostModel()
        self._token_cost = CostModel()  # run time against padded tokens, for length-aware batchers
        self._arrivals = ArrivalRate()
        _registry.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Request]] = []
        self._seq = itertools.count()
        self._depth = 0  # queued, not yet dispatched items of live requests
        self._running = 0  # items in the batch being run
        self._closing = False
        self._thread: threading.Thread | None = None
        self._waiting = False  # the worker sleeps and wants a wake-up on arrival
        self._wake: Callable[[], None] = self._cond.notify
        self._exit_waiters: list[_Waiter] = []
        self._stopped = False  # the worker has exited for good
        self._wait_started: float | None = None
        self._last_arrival = 0.0
        self._burst_gap = _MIN_QUIET  # smoothed gap between arrivals while the worker waits for company

    def _reset_after_fork(self) -> None:
        # The parent's worker thread and callers do not exist in a forked child: start afresh there.
        closing = self._closing
        self._init_state()
        self._closing = closing

    # ------------------------------------------------------------------ public API

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` (always one item, whatever its type) in a batch; block until its result."""
        self._refuse_worker_thread("__call__", "acall")
        timeout = remaining(self.timeout if timeout is None else timeout)
        waiter = _SyncWaiter()
        request = self._submit([item], True, timeout, waiter)
        return self._wait_sync(request, waiter, timeout)  # type: ignore[no-any-return]

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch from any event loop; awaiting never blocks the loop."""
        self._refuse_worker_thread("acall", None)
        timeout = remaining(self.timeout if timeout is None else timeout)
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        request = self._submit([item], True, timeout, waiter)
        return await self._wait_async(request, waiter, timeout)  # type: ignore[no-any-return]

    def map(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Run many items as one request (admitted whole or not at all); results in input order."""
        self._refuse_worker_thread("map", "amap")
        batch_items = list(items)
        if not batch_items:
            return []
        timeout = remaining(self.timeout if timeout is None else timeout)
        waiter = _SyncWaiter()
        request = self._submit(batch_items, False, timeout, waiter)
        return self._wait_sync(request, waiter, timeout)  # type: ignore[no-any-return]

    async def amap(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Async :meth:`map`."""
        self._refuse_worker_thread("amap", None)
        batch_items = list(items)
        if not batch_items:
            return []
        timeout = remaining(self.timeout if timeout is None else timeout)
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        request = self._submit(batch_items, False, timeout, waiter)
        return await self._wait_async(request, waiter, timeout)  # type: ignore[no-any-return]

    def start(self) -> None:
        """Start the worker now instead of at the first call (it also starts by itself)."""
        with self._lock:
            if self._closing:
                raise BatcherClosed(f"batcher {self.name!r} is closed; create a new Batcher")
            self._ensure_worker_locked()

    def close(self, drain: bool = True) -> None:
        """Stop accepting calls; with ``drain`` run what is queued, else fail it with BatcherClosed. Blocks until stopped."""
        thread = self._begin_close(drain)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    async def aclose(self, drain: bool = True) -> None:
        """Async :meth:`close`: awaits the worker's exit without blocking the loop."""
        thread = self._begin_close(drain)
        if thread is None or thread is threading.current_thread():
            return
        waiter = _AsyncWaiter(asyncio.get_running_loop())
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
            qw50, qw99 = self._queue_wait.percentiles()
            rt50, rt99 = self._run_time.percentiles()
            return Stats(
                name=self.name,
                submitted=self._submitted,
                completed=self._completed,
                failed=self._failed,
                rejected=self._rejected,
                expired=self._expired,
                cancelled=self._cancelled,
                batches=self._batches,
                queue_depth=self._depth,
                running=self._running,
                mean_batch_size=self._items_run / self._batches if self._batches else 0.0,
                batch_sizes=dict(self._sizes),
                queue_wait_p50=qw50,
                queue_wait_p99=qw99,
                run_time_p50=rt50,
                run_time_p99=rt99,
                queue_wait=self._queue_wait.histogram(),
                run_time=self._run_time.histogram(),
                fixed_cost=self._cost.fixed,
                per_item_cost=self._cost.per_item,
                window=_STATS_WINDOW,
                padding_efficiency=self._real_tokens / self._padded_tokens if self._padded_tokens else None,
            )

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
        if self._closing:
            state = "closed" if self._thread is None or not self._thread.is_alive() else "closing"
        else:
            state = "running" if self._thread is not None else "idle"
        return (
            f"<Batcher {self.name!r} {state} max_batch_size={self.max_batch_size} "
            f"max_wait_ms={self.max_wait_ms} queued={self._depth} running={self._running} "
            f"batches={self._batches} completed={self._completed}>"
        )

    # ------------------------------------------------------------------ methods: one batcher per instance

    def _options(self) -> BatcherOptions:
        return BatcherOptions(
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            small_request_size=self.small_request_size,
            max_queue_size=self.max_queue_size,
            on_error=self.on_error,
            name=self.name,
            aging_ms=self.aging_ms,
            collate=self.collate,
            max_batch_tokens=self.max_batch_tokens,
            group_by_length=self.group_by_length,
            timeout=self.timeout,
            on_worker_start=self.on_worker_start,
        )

    def __set_name__(self, owner: type, name: str) -> None:
        # Only a function defined in this class body is a method; a ready-made batcher assigned to
        # a class attribute stays one shared batcher.
        if getattr(self._fn, "__qualname__", None) == f"{owner.__qualname__}.{name}":
            self._attr_name = name

    def __get__(self, instance: object | None, owner: type) -> Batcher[T, U]:
        if instance is None or self._attr_name is None:
            return self
        try:
            namespace = instance.__dict__
        except AttributeError:
            raise TypeError(
                f"@batch on {owner.__name__}.{self._attr_name} needs instances with a __dict__ to keep "
                "their own batcher; remove __slots__ or add '__dict__' to it"
            ) from None
        with self._lock:
            # Instance attributes shadow this non-data descriptor, so the next lookup is a plain one.
            bound = namespace.get(self._attr_name)
            if not isinstance(bound, Batcher):
                options = self._options()
                options["name"] = f"{self.name}[{id(instance):#x}]"
                bound = _build(self._fn.__get__(instance, owner), options)
                namespace[self._attr_name] = bound
            return bound

    # ------------------------------------------------------------------ admission

    def _refuse_worker_thread(self, method: str, async_method: str | None) -> None:
        thread = self._thread
        if thread is not None and thread is threading.current_thread():
            if async_method is not None:
                fix = f"await {async_method}() instead, from outside the batch function"
            else:
                fix = "the batch function cannot wait for its own batcher; call the model directly there"
            raise RuntimeError(
                f"{method}() was called on batcher {self.name!r}'s own worker, where it would wait on itself "
                f"forever: {fix}"
            )

    def _submit(self, items: list[Any], single: bool, timeout: float | None, waiter: _Waiter) -> _Request:
        n = len(items)
        now = _clock()
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
        tokens = self._measure(items)
        request = _Request(items, single, deadline, now, waiter, tokens)
        with self._lock:
            if self._closing:
                self._rejected += n
                raise BatcherClosed(f"batcher {self.name!r} is closed and accepts no calls")
            if self._depth + n > self.max_queue_size:
                self._rejected += n
                retry_after = self._retry_after_locked(self._depth + n - self.max_queue_size)
                raise Overloaded(
                    f"batcher {self.name!r} has {self._depth} items queued (max_queue_size={self.max_queue_size}); "
                    f"retry in {retry_after:.3g}s",
                    retry_after=retry_after,
                )
            if self._thread is None:
                self._ensure_worker_locked()
            key = now if n <= self.small_request_size else now + self._aging_locked()
            heapq.heappush(self._heap, (key, next(self._seq), request))
            self._depth += n
            self._submitted += n
            self._arrivals.add(now, n)
            if self._wait_started is not None:
                self._burst_gap += 0.2 * (now - self._last_arrival - self._burst_gap)
            self._last_arrival = now
            if self._waiting:
                self._waiting = False
                self._wake()
        return request

    def _count_rejected(self, n: int) -> None:
        with self._lock:
            self._rejected += n

    def _measure(self, items: list[Any]) -> list[int] | None:
        """Each item's length, checked against the token budget before anything is queued."""
        size_of = self._size_of
        if size_of is None:
            return None
        tokens = [size_of(item) for item in items]
        budget = self.max_batch_tokens
        for index, length in enumerate(tokens):
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise TypeError(f"the size of item {index} must be an int >= 0, got {length!r}")
            if budget is not None and length > budget:
                where = "the item" if len(items) == 1 else f"item {index}"
                raise ItemTooLarge(
                    f"{where} has {length} tokens, more than batcher {self.name!r}'s max_batch_tokens={budget}; "
                    "truncate it or raise max_batch_tokens"
                )
        return tokens

    def _aging_locked(self) -> float:
        if self.aging_ms is not None:
            return self.aging_ms / 1000.0
        full = self._cost.estimate(self.max_batch_size)
        if full is None:
            return 1.0
        return min(max(_AGING_BATCHES * full, _MIN_AGING), _MAX_AGING)

    def _retry_after_locked(self, excess: int) -> float:
        full = self._cost.estimate(self.max_batch_size)
        if not full:
            return 1.0
        return max(excess * full / self.max_batch_size, full)

    # ------------------------------------------------------------------ waiting for results

    def _wait_sync(self, request: _Request, waiter: _SyncWaiter, timeout: float | None) -> Any:
        try:
            if not waiter.wait(timeout):
                self._expire(request)
                waiter.wait(None)  # resolved by now, by the expiry or by a result that won the race
        except BaseException:
            # KeyboardInterrupt while blocked: the caller is gone, so is its claim on the queue.
            self._cancel(request)
            raise
        if waiter.exc is not None:
            raise waiter.exc
        return waiter.value

    async def _wait_async(self, request: _Request, waiter: _AsyncWaiter, timeout: float | None) -> Any:
        timer = None if timeout is None else waiter.loop.call_later(timeout, self._expire, request)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._cancel(request)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, request: _Request) -> None:
        with self._lock:
            self._finish_locked(request, None, DeadlineExceeded(self._expired_message(request)), "expired")

    def _cancel(self, request: _Request) -> None:
        with self._lock:
            self._finish_locked(request, None, asyncio.CancelledError(), "cancelled")

    def _expired_message(self, request: _Request) -> str:
        what = "call" if request.single else f"map of {request.size} items"
        state = "before it was dispatched" if request.cursor == 0 else "while it ran"
        return f"the {what} to batcher {self.name!r} passed its deadline {state}"

    def _finish_locked(
        self, request: _Request, value: Any, exc: BaseException | None, outcome: str, outbox: _Outbox | None = None
    ) -> bool:
        """Resolve ``request`` unless it already is; the single place results and errors are decided.

        With an ``outbox`` the hand-over to the caller is deferred to :func:`_send`, after the lock is
        released, so woken callers do not queue up on the lock while a whole batch is delivered.
        """
        if request.done:
            return False
        request.done = True
        self._depth -= request.size - request.cursor
        request.cursor = request.size
        if outcome == "completed":
            self._completed += request.size
        elif outcome == "failed":
            self._failed += request.size
        elif outcome == "expired":
            self._expired += request.size
        else:
            self._cancelled += request.size
        if outbox is None:
            request.waiter.resolve(value, exc)
        else:
            outbox.append((request.waiter, value, exc))
        return True

    # ------------------------------------------------------------------ the worker

    def _ensure_worker_locked(self) -> None:
        if self._thread is not None:
            return
        target = self._run_async_worker if self._is_async else self._run_sync_worker
        self._thread = threading.Thread(target=target, name=f"microbatch-{self.name}", daemon=True)
        self._thread.start()

    def _begin_close(self, drain: bool) -> threading.Thread | None:
        with self._lock:
            self._closing = True
            if not drain:
                self._drop_queued_locked(
                    lambda: BatcherClosed(f"batcher {self.name!r} closed before this call ran"), "cancelled"
                )
            if self._waiting:
                self._waiting = False
                self._wake()
            return self._thread

    def _drop_queued_locked(self, error: Callable[[], BaseException], outcome: str) -> None:
        while self._heap:
            self._finish_locked(heapq.heappop(self._heap)[2], None, error(), outcome)

    def _plan_locked(self) -> tuple[list[_Slice] | None, float | None]:
        """:meth:`_next_batch_locked`, supervised: a fault in planning fails what is queued, never the worker."""
        try:
            return self._next_batch_locked()
        except Exception as exc:
            logger.exception("microbatch: internal error while forming a batch in %r", self.name)
            self._drop_queued_locked(lambda: MicrobatchError(f"internal error in batcher {self.name!r}: {exc!r}"), "failed")
            return None, (0.0 if self._closing else None)

    def _next_batch_locked(self) -> tuple[list[_Slice] | None, float | None]:
        """What the worker does next: a batch to run, or how long to sleep (None: until woken).

        Returns ``(None, 0.0)`` when the worker should exit.
        """
        while True:
            now = _clock()
            if self._depth == 0:
                self._wait_started = None
                self._heap.clear()  # only dead entries remain: every live one has queued items
                if self._closing:
                    return None, 0.0
                return None, None
            if not self._closing and self._depth < self.max_batch_size:
                delay = self._company_delay_locked(now)
                if delay > 0:
                    return None, min(delay, _MAX_SLEEP)
            self._wait_started = None
            batch = self._take_locked(now) if self._size_of is None else self._take_by_length_locked(now)
            if batch:
                return batch, None
            # Everything at the top had expired or been cancelled: plan again.

    def _company_delay_locked(self, now: float) -> float:
        """Seconds worth waiting for more items before dispatching what is queued (0: go now)."""
        if self.max_wait_ms is not None:
            if self.max_wait_ms == 0:
                return 0.0
            return self._oldest_arrival_locked() + self.max_wait_ms / 1000.0 - now
        fixed = self._cost.fixed
        if fixed is None or fixed <= 0:
            return 0.0
        if self._wait_started is None:
            # Company is worth waiting for only if at least one item is expected within a fixed cost.
            if self._arrivals.at(now) * fixed < 1.0:
                return 0.0
            self._wait_started = now
        if self._last_arrival <= self._wait_started:
            # Nobody has come yet: callers released by the last batch may still be on their way
            # back (a client's round trip), so give them up to one fixed cost.
            return self._wait_started + fixed - now
        full = self._cost.estimate(self.max_batch_size) or fixed
        give_up = self._wait_started + min(2 * fixed, full)
        # Once company arrives, keep waiting only while the burst goes on: returning callers come
        # close together, and a few typical in-burst gaps of silence mean it is over.
        quiet = self._last_arrival + min(max(4 * self._burst_gap, _MIN_QUIET), fixed / 2)
        return min(give_up, quiet) - now

    def _oldest_arrival_locked(self) -> float:
        return min((r.arrival for _, _, r in self._heap if not r.done), default=_clock())

    def _gone_locked(self, request: _Request, now: float) -> bool:
        """True if ``request`` must not run: already resolved, or past its deadline (resolved here)."""
        if request.done:
            return True
        if request.deadline is not None and now >= request.deadline:
            self._finish_locked(request, None, DeadlineExceeded(self._expired_message(request)), "expired")
            return True
        return False

    def _take_locked(self, now: float) -> list[_Slice]:
        """Take the next batch in priority order.

        A batch that carries small requests is topped up with large-request items only to
        ``_SMALL_RIDE`` of ``max_batch_size``: small requests then ride a shorter batch (about 3/4 of
        a full one's run time for most models) at a cost of a few percent of bulk throughput.
        """
        heap = self._heap
        space = self.max_batch_size
        batch: list[_Slice] = []
        carries_small = False
        while space and heap:
            request = heap[0][2]
            if self._gone_locked(request, now):
                heapq.heappop(heap)  # lazy removal of cancelled and expired requests
                continue
            if request.size <= self.small_request_size:
                carries_small = True
            elif carries_small:
                space = min(space, self._small_ride - (self.max_batch_size - space))
                if space <= 0:
                    break
            start = request.cursor
            stop = min(request.size, start + space)
            request.cursor = stop
            if stop == request.size:
                heapq.heappop(heap)
            self._depth -= stop - start
            space -= stop - start
            batch.append((request, start, stop))
            self._queue_wait.add(now - request.arrival)
        self._running = sum(stop - start for _, start, stop in batch)
        return batch

    def _take_by_length_locked(self, now: float) -> list[_Slice]:
        """Form a batch under the token budget, grouping similar lengths when ``group_by_length``.

        The first request in priority order anchors the batch, so nothing starves. The rest of a
        window of requests at the top of the heap is considered in two tiers, requests already due
        (small ones, and large ones whose aging has run out) before large ones not yet due, so length
        grouping never breaks small-request priority; within a tier, lengths closest to the anchor's
        go first. A request contributes a contiguous run of its items, keeping results in order.
        """
        heap = self._heap
        window: list[tuple[float, int, _Request]] = []
        seen = 0
        while heap and seen < 4 * self.max_batch_size:
            entry = heapq.heappop(heap)
            request = entry[2]
            if self._gone_locked(request, now):
                continue
            window.append(entry)
            seen += request.size - request.cursor
        if not window:
            return []
        order = window
        if self.group_by_length and len(window) > 1:
            anchor = _next_tokens(window[0][2])
            order = [window[0], *sorted(window[1:], key=lambda e: (e[0] > now, abs(_next_tokens(e[2]) - anchor)))]
        # Pick items in that order under the budget, noting each prefix's real and padded tokens.
        budget = self.max_batch_tokens
        picks: list[tuple[_Request, int]] = []
        reals: list[int] = []
        longests: list[int] = []
        longest = real = 0
        for _, _, request in order:
            tokens = cast("list[int]", request.tokens)  # every request of a length-aware batcher is measured
            index = request.cursor
            while index < request.size and len(picks) < self.max_batch_size:
                grown = max(longest, tokens[index])
                if budget is not None and grown * (len(picks) + 1) > budget:
                    break
                longest, real = grown, real + tokens[index]
                picks.append((request, index))
                reals.append(real)
                longests.append(longest)
                index += 1
            if len(picks) == self.max_batch_size or (index == request.cursor and not self.group_by_length):
                break  # full, or FIFO forming stops at the first item that does not fit
        count = len(picks)
        a, b = self._token_cost.fixed, self._token_cost.per_item
        if self.group_by_length and a is not None and b is not None and count > 1:
            # Keep the prefix that runs the most real tokens per second under the measured cost
            # a + b·padded: with a large fixed cost that is the whole pick, and when padding costs
            # more than another call would, a smaller, tighter batch.
            count = max(range(1, count + 1), key=lambda k: (reals[k - 1] / (a + b * longests[k - 1] * k + 1e-12), k))
        batch: list[_Slice] = []
        for request, index in picks[:count]:
            if batch and batch[-1][0] is request:
                batch[-1] = (request, batch[-1][1], index + 1)
            else:
                batch.append((request, index, index + 1))
        for request, start, stop in batch:
            request.cursor = stop
            self._depth -= stop - start
            self._queue_wait.add(now - request.arrival)
        for entry in window:
            if entry[2].cursor < entry[2].size:
                heapq.heappush(heap, entry)
        self._running = count
        self._real_tokens += reals[count - 1] if count else 0
        self._padded_tokens += longests[count - 1] * count if count else 0
        return batch

    def _worker_started(self) -> None:
        """Run ``on_worker_start`` on this (the worker) thread; its failure must not cost the callers their worker."""
        if self.on_worker_start is None:
            return
        try:
            self.on_worker_start()
        except BaseException:  # noqa: BLE001 - even SystemExit here must not leave callers without a worker
            logger.exception("microbatch: on_worker_start of batcher %r raised; the worker serves without it", self.name)

    def _run_sync_worker(self) -> None:
        self._worker_started()
        fn = self._invoker()
        while True:
            with self._lock:
                batch, delay = self._plan_locked()
                while batch is None and delay != 0.0:
                    self._waiting = True
                    self._cond.wait(delay)
                    self._waiting = False
                    batch, delay = self._plan_locked()
            if batch is None:
                break
            steps = self._execute(batch)
            try:
                items = next(steps)
                while True:
                    started = _clock()
                    try:
                        outcome: _Outcome = (True, fn(items), _clock() - started)
                    except BaseException as exc:  # noqa: BLE001 - the batch function's failure is the callers' to see
                        outcome = (False, exc, _clock() - started)
                    items = steps.send(outcome)
            except StopIteration:
                pass
        self._exited()

    def _invoker(self) -> Callable[[list[Any]], Any]:
        """What the sync worker calls on a list of items: ``fn``, wrapped in the collation if any."""
        fn, collate = self._fn, self.collate
        if collate is None:
            return fn

        def invoke(items: list[Any]) -> Any:
            return collate.split(fn(collate.collate(items)), items)

        return invoke

    def _run_async_worker(self) -> None:
        self._worker_started()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._async_worker_main(loop))
        finally:
            loop.close()
            self._exited()

    async def _async_worker_main(self, loop: asyncio.AbstractEventLoop) -> None:
        fn, collate = self._fn, self.collate
        wakeup = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(wakeup.set)

        with self._lock:
            self._wake = wake
        while True:
            with self._lock:
                batch, delay = self._plan_locked()
                if batch is None and delay != 0.0:
                    wakeup.clear()
                    self._waiting = True
            if batch is None:
                if delay == 0.0:
                    break
                try:
                    await asyncio.wait_for(wakeup.wait(), delay)
                except TimeoutError:
                    pass
                with self._lock:
                    self._waiting = False
                continue
            steps = self._execute(batch)
            try:
                items = next(steps)
                while True:
                    started = _clock()
                    try:
                        if collate is None:
                            result = await fn(items)
                        else:
                            result = collate.split(await fn(collate.collate(items)), items)
                        outcome: _Outcome = (True, result, _clock() - started)
                    except BaseException as exc:  # noqa: BLE001
                        outcome = (False, exc, _clock() - started)
                    items = steps.send(outcome)
            except StopIteration:
                pass

    def _exited(self) -> None:
        with self._lock:
            self._stopped = True
            waiters, self._exit_waiters = self._exit_waiters, []
            for waiter in waiters:
                waiter.resolve(None, None)

    def _execute(self, batch: list[_Slice]) -> Generator[list[Any], _Outcome, None]:
        """Run one batch: yields the item lists to call ``fn`` on, receives each call's outcome.

        Shared by the sync and async workers. On ``isolate``, a failed part is split in halves and
        each half retried until the failing items are alone; nothing here may escape, so every
        request of the batch is resolved whatever ``fn`` or its output does.
        """
        parts = [batch]
        try:
            while parts:
                part = self._live_slices(parts.pop())
                if not part:
                    continue
                items = [item for request, start, stop in part for item in request.items[start:stop]]
                ok, value, seconds = yield items
                with self._lock:
                    self._record_run_locked(len(items), seconds)
                if ok:
                    self._deliver(part, items, value, seconds)
                elif (
                    self.on_error == "isolate"
                    and len(items) > 1
                    and isinstance(value, Exception)
                ):
                    first, second = _split(part, len(items) // 2)
                    parts.append(second)
                    parts.append(first)
                else:
                    self._fail(part, _as_exception(value))
        except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
            logger.exception("microbatch: internal error in batcher %r; failing the batch", self.name)
            for rest in [batch, *parts]:
                self._fail(rest, MicrobatchError(f"internal error in batcher {self.name!r}: {exc!r}"))
        finally:
            with self._lock:
                self._running = 0

    def _live_slices(self, part: list[_Slice]) -> list[_Slice]:
        now = _clock()
        with self._lock:
            return [slice_ for slice_ in part if not self._gone_locked(slice_[0], now)]

    def _deliver(self, part: list[_Slice], items: list[Any], output: Any, seconds: float) -> None:
        if inspect.iscoroutine(output):
            output.close()
            self._fail(part, TypeError(
                f"the batch function of {self.name!r} returned a coroutine: pass the async function itself "
                "(an `async def`), not a sync wrapper around it"
            ))
            return
        try:
            if not hasattr(output, "__len__") or not hasattr(output, "__getitem__"):
                output = list(output)
            got = len(output)
            if got != len(items):
                self._fail(part, BatchSizeMismatch(len(items), got))
                return
            values = [output[i] for i in range(got)]
        except Exception as exc:
            # A user-defined __len__, __getitem__ or iterator raised: every caller of the batch sees it.
            self._fail(part, exc)
            return
        outbox: _Outbox = []
        with self._lock:
            self._cost.add(len(items), seconds)  # only successful runs describe the function's cost
            if self._size_of is not None:
                lengths = [t for request, start, stop in part for t in cast("list[int]", request.tokens)[start:stop]]
                self._token_cost.add(max(lengths) * len(lengths), seconds)
            offset = 0
            for request, start, stop in part:
                k = stop - start
                if request.single:
                    self._finish_locked(request, values[offset], None, "completed", outbox)
                elif not request.done and request.results is not None:
                    request.results[start:stop] = values[offset:offset + k]
                    request.pending -= k
                    if request.pending == 0:
                        self._finish_locked(request, request.results, None, "completed", outbox)
                offset += k
        _send(outbox)

    def _fail(self, part: list[_Slice], exc: BaseException) -> None:
        outbox: _Outbox = []
        with self._lock:
            for request, _, _ in part:
                if not request.done:
                    # Each caller raises its own copy so tracebacks do not pile up on one shared object.
                    self._finish_locked(request, None, _clone(exc) if outbox else exc, "failed", outbox)
        _send(outbox)

    def _record_run_locked(self, n: int, seconds: float) -> None:
        self._batches += 1
        self._items_run += n
        self._sizes[n] = self._sizes.get(n, 0) + 1
        self._run_time.add(seconds)


def _next_tokens(request: _Request) -> int:
    return cast("list[int]", request.tokens)[request.cursor]


def _split(part: list[_Slice], at: int) -> tuple[list[_Slice], list[_Slice]]:
    """Split a batch's slices into the first ``at`` items and the rest."""
    first: list[_Slice] = []
    second: list[_Slice] = []
    seen = 0
    for request, start, stop in part:
        k = stop - start
        if seen + k <= at:
            first.append((request, start, stop))
        elif seen >= at:
            second.append((request, start, stop))
        else:
            cut = start + (at - seen)
            first.append((request, start, cut))
            second.append((request, cut, stop))
        seen += k
    return first, second


def _as_exception(value: BaseException) -> BaseException:
    if isinstance(value, Exception):
        return value
    # KeyboardInterrupt, SystemExit... raised by fn must not unwind a caller's event loop.
    error = MicrobatchError(f"the batch function raised {value!r}")
    error.__cause__ = value
    return error


def _clone(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more caller, or ``exc`` itself when no faithful copy can be made.

    copy.copy (``__reduce__``) knows the fields built-in exceptions keep outside ``args``, but it
    re-runs a Python ``__init__`` on the formatted args; rebuilding without ``__init__`` avoids that.
    A copy counts only if it has the same type, args and message.
    """
    cls = type(exc)
    expected = str(exc)
    for make in (copy.copy, _rebuild):
        try:
            duplicate = make(exc)
            if type(duplicate) is cls and duplicate.args == exc.args and str(duplicate) == expected:
                duplicate.__cause__ = exc.__cause__
                duplicate.__context__ = exc.__context__
                duplicate.__suppress_context__ = exc.__suppress_context__
                return duplicate.with_traceback(exc.__traceback__)
        except Exception:  # noqa: S112 - a copy that cannot be made just falls back to the original
            continue
    return exc


def _rebuild(exc: BaseException) -> BaseException:
    duplicate = type(exc).__new__(type(exc), *exc.args)
    duplicate.__dict__.update(exc.__dict__)
    duplicate.args = exc.args
    return duplicate


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_ms(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be None or a number of milliseconds >= 0, got {value!r}")


def batch(**options: Unpack[BatcherOptions]) -> Callable[[Callable[..., Any]], Batcher[Any, Any]]:
    """Decorator form of :class:`Batcher`, taking the same keyword arguments.

    On a function it returns a :class:`Batcher`; on a method, each instance gets its own batcher the
    first time the attribute is read (so ``self`` is bound and instances never share batches).
    """

    def decorate(fn: Callable[..., Any]) -> Batcher[Any, Any]:
        # Typed loosely: a method takes (self, items) until the instance binds it.
        return _build(fn, options)

    return decorate


def _build(fn: Callable[..., Any], options: BatcherOptions) -> Batcher[Any, Any]:
    """``Batcher(fn, **options)`` for options passed through, whichever overload they fit."""
    rest = cast(_Options, {k: v for k, v in options.items() if k != "collate"})
    collate = options.get("collate")
    return Batcher(fn, **rest) if collate is None else Batcher(fn, collate=collate, **rest)
