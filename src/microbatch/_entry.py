"""How calls enter a batcher: ``__call__``, ``acall``, ``map``, ``amap``, ``submit`` and ``submit_many``; admission.

A mixin of :class:`~microbatch.Batcher`, which owns the state it reads. Each call checks its items,
its timeout and the queue's room (``_admission``, the breaker, coalescing), queues one request under
the batcher's lock and waits for it (``_waiters``); the outcome is decided by the batcher's
``_finish_locked``, whatever resolves it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable, Iterable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

from . import _clock
from ._admission import call_timeout, refusal
from ._breaker import Breaker
from ._coalesce import Coalescer, Ticket
from ._crew import Crew
from ._deadline import ambient, remaining
from ._errors import BatcherClosed, DeadlineExceeded
from ._groups import group_keys
from ._policy import WaitPolicy
from ._queue import Request, RequestQueue, as_items, measure
from ._stats import StatsRecorder
from ._waiters import AsyncWaiter, CallbackWaiter, SyncWaiter, Waiter, wait_async, wait_sync

__all__ = ["Entry"]

T = TypeVar("T")
U = TypeVar("U")


class Entry(Generic[T, U]):
    """The public calls of a batcher (items of type ``T``, results of type ``U``) and their admission."""

    __slots__ = ()

    name: str
    if TYPE_CHECKING:  # the options admission reads: Final attributes of Batcher, so read-only here

        @property
        def timeout(self) -> float | None: ...
        @property
        def max_queue_size(self) -> int: ...
        @property
        def max_queue_delay_ms(self) -> float | None: ...
        @property
        def max_batch_size(self) -> int: ...
        @property
        def max_batch_tokens(self) -> int | None: ...
        @property
        def small_request_size(self) -> int: ...
        @property
        def group_by(self) -> Callable[[Any], Hashable] | None: ...

    _size_of: Callable[[Any], int] | None
    _plain: bool  # no size_of, group_by or coalescing: admission has nothing to measure, key or share
    _lock: threading.Lock
    _queue: RequestQueue
    _policy: WaitPolicy
    _stats: StatsRecorder
    _crew: Crew
    _coalescer: Coalescer | None
    _breaker: Breaker
    _closing: bool
    _pending: set[Request]  # accepted and unresolved
    _finish_locked: Callable[..., bool]
    _expire_locked: Callable[[Request], None]

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` (always one item, whatever its type) in a batch; block until its result."""
        if get_ident() in self._crew.idents:
            self._crew.refuse_own_thread("__call__", "acall", self.name)
        waiter = SyncWaiter()
        request, timeout, same = self._prepare([item], True, timeout, waiter)
        with self._lock:  # _admit's two steps, inline on the one-item paths: a frame less per call
            self._enqueue_locked(request, same)
        return wait_sync(waiter, timeout, self, request)  # type: ignore[no-any-return]

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch from any event loop; awaiting never blocks the loop."""
        if get_ident() in self._crew.idents:
            self._crew.refuse_own_thread("acall", None, self.name)
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout, same = self._prepare([item], True, timeout, waiter)
        with self._lock:  # _admit's two steps, inline on the one-item paths: a frame less per call
            self._enqueue_locked(request, same)
        return await wait_async(waiter, timeout, self, request)  # type: ignore[no-any-return]

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
        if get_ident() in self._crew.idents:
            self._crew.refuse_own_thread("map", "amap", self.name)
        batch_items = as_items(items, "map")
        if not batch_items:
            return []
        waiter = SyncWaiter()
        request, timeout = self._admit(batch_items, False, timeout, waiter, return_exceptions)
        return wait_sync(waiter, timeout, self, request)  # type: ignore[no-any-return]

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
        if get_ident() in self._crew.idents:
            self._crew.refuse_own_thread("amap", None, self.name)
        batch_items = as_items(items, "amap")
        if not batch_items:
            return []
        waiter = AsyncWaiter(asyncio.get_running_loop())
        request, timeout = self._admit(batch_items, False, timeout, waiter, return_exceptions)
        return await wait_async(waiter, timeout, self, request)  # type: ignore[no-any-return]

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
        if timeout is not None:
            timeout = call_timeout(timeout, self.timeout)
        else:  # the common case, without a call: no per-call timeout, and often no ambient deadline either
            timeout = self.timeout if ambient() is None else remaining(self.timeout)
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
        if self._plain:  # no size_of, group_by or coalescing: nothing to measure, key or share
            request, same = Request(items, single, deadline, now, waiter, None), None
        else:
            request, same = self._measured(items, single, deadline, now, waiter)
        if return_exceptions:
            request.return_exceptions = True
        return request, timeout, same

    def _measured(
        self, items: list[Any], single: bool, deadline: float | None, now: float, waiter: Waiter
    ) -> tuple[Request, list[Hashable] | None]:
        """The request of a batcher with ``size_of``, ``group_by`` or coalescing, and its items' coalescing keys."""
        size_of, coalescer = self._size_of, self._coalescer
        try:
            tokens = None if size_of is None else measure(size_of, items, self.max_batch_tokens, self.name)
            keys = None if self.group_by is None else group_keys(self.group_by, items, self.name)
        except Exception:
            self._count_rejected(len(items))  # ItemTooLarge, or a size or key function that failed: refused
            raise
        same = None if coalescer is None else coalescer.keys(items)  # what makes items identical
        request = (Request if coalescer is None else Ticket)(items, single, deadline, now, waiter, tokens, keys)
        return request, same

    def _enqueue_locked(self, request: Request, same: list[Hashable] | None) -> None:
        """Queue a prepared request (*locked*), or raise why not (closed, breaker open, queue full)."""
        n, now, queue, coalescer = request.size, request.arrival, self._queue, self._coalescer
        if self._closing:
            self._stats.rejected += n
            raise BatcherClosed(f"batcher {self.name!r} is closed and accepts no calls")
        fresh = n if same is None else cast(Coalescer, coalescer).fresh(same)  # items that take queue space
        if queue.depth + fresh > self.max_queue_size or self.max_queue_delay_ms is not None or not self._breaker.clean:
            self._refuse_locked(now, n, fresh)
        crew = self._crew
        if not crew.started:
            crew.start(self.name)
        self._pending.add(request)
        self._stats.submitted += n
        if same is None:
            queued: Request | None = request
        else:
            self._stats.coalesced += n - fresh
            queued = cast(Coalescer, coalescer).admit(cast(Ticket, request), same)
        if queued is not None:
            policy = self._policy
            queue.push(queued, now if queued.size <= self.small_request_size else now + policy.aging())
            policy.arrived(now, fresh)
            crew.wake()

    def _refuse_locked(self, now: float, n: int, fresh: int) -> None:
        """Raise why ``n`` items (``fresh`` of them taking queue space) may not join now, if they may not."""
        queue, running, breaker = self._queue, self._stats.running, self._breaker
        refused = (None if breaker.clean else breaker.refusal(
            now, self.name, n, queue.depth + running, self.max_batch_size
        )) or refusal(
            self._policy, queue.depth, running, fresh, self.max_queue_size, self.max_queue_delay_ms, self.name
        )
        if refused is not None:
            self._stats.rejected += n
            raise refused

    def _count_rejected(self, n: int) -> None:
        with self._lock:
            self._stats.rejected += n

    def _expire(self, request: Request) -> None:
        with self._lock:
            self._expire_locked(request)

    def _cancel(self, request: Request) -> None:
        with self._lock:
            self._finish_locked(request, None, asyncio.CancelledError(), "cancelled")


def _nothing() -> None:
    """The cancel function of an empty submission: there is nothing to cancel."""
