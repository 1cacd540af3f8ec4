"""Waiters and delivery: how a caller blocks on (or awaits) its result, and how results reach it.

A thread blocks on a :class:`SyncWaiter` (a released lock is the cheapest thread hand-off); a
coroutine awaits an :class:`AsyncWaiter`'s future on its own event loop, settled there with
``call_soon_threadsafe``. Outcomes decided under the batcher's lock go into an :data:`Outbox` and are
handed over by :func:`send` after the lock is released, one wake-up per event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = [
    "AsyncWaiter", "CallbackWaiter", "Outbox", "Owner", "SyncWaiter", "Waiter", "send", "wait_async", "wait_sync",
]

logger = logging.getLogger("microbatch")

R = TypeVar("R")  # the request a waiter belongs to
R_contra = TypeVar("R_contra", contravariant=True)


class Owner(Protocol[R_contra]):
    """What a waiting caller tells when it gives up: its batcher. Passed whole, so a call makes no bound methods."""

    def _expire(self, request: R_contra, /) -> None: ...

    def _cancel(self, request: R_contra, /) -> None: ...


class SyncWaiter:
    """A one-shot result slot a thread blocks on."""

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


class AsyncWaiter:
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


class CallbackWaiter:
    """A one-shot result slot that calls ``callback(value, exc)`` on whichever engine thread resolves it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any, BaseException | None], object]) -> None:
        self.callback = callback

    def resolve(self, value: Any, exc: BaseException | None) -> None:
        try:
            self.callback(value, exc)
        except Exception:  # the worker (or a caller's expiry) must survive a faulty callback
            logger.exception("microbatch: a submit() callback raised; its exception is ignored")


Waiter = SyncWaiter | AsyncWaiter | CallbackWaiter
Outbox = list[tuple[Waiter, Any, "BaseException | None"]]


def wait_sync(waiter: SyncWaiter, timeout: float | None, owner: Owner[R], request: R) -> Any:
    """Block until ``waiter`` is resolved; ``owner._expire(request)`` at the timeout, ``_cancel`` if interrupted."""
    try:
        if not waiter.wait(timeout):
            owner._expire(request)
            waiter.wait(None)  # resolved by now, by the expiry or by a result that won the race
    except BaseException:
        # KeyboardInterrupt while blocked: the caller is gone, so is its claim on the queue.
        owner._cancel(request)
        raise
    if waiter.exc is not None:
        raise waiter.exc
    return waiter.value


async def wait_async(waiter: AsyncWaiter, timeout: float | None, owner: Owner[R], request: R) -> Any:
    """Await ``waiter``; ``owner._expire(request)`` at the timeout (a timer on the caller's loop), ``_cancel`` if
    cancelled."""
    timer = None if timeout is None else waiter.loop.call_later(timeout, owner._expire, request)
    try:
        return await waiter.future
    except asyncio.CancelledError:
        owner._cancel(request)
        raise
    finally:
        if timer is not None:
            timer.cancel()


def send(outbox: Outbox) -> None:
    """Hand decided outcomes to their callers: one loop wake-up per event loop, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for waiter, value, exc in outbox:
        if isinstance(waiter, AsyncWaiter):
            by_loop.setdefault(waiter.loop, []).append((waiter.future, value, exc))
        else:
            waiter.resolve(value, exc)
    for loop, settlements in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settlements)
        except RuntimeError:
            pass  # that loop is closed: its callers are gone


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    # The caller may have been cancelled meanwhile; a result must never land on a done future.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _settle_all(settlements: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, exc in settlements:
        _settle(future, value, exc)
