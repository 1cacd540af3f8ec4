"""A batcher's lifecycle: start, close and aclose (drain or drop, with a time limit) and ``with`` blocks.

A mixin of :class:`~microbatch.Batcher`, which owns the state it reads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from ._crew import Crew
from ._errors import BatcherClosed
from ._options import check_option
from ._request import Request
from ._waiters import AsyncWaiter, Waiter

__all__ = ["Lifecycle"]

logger = logging.getLogger("microbatch")


class Lifecycle:
    """Starting and stopping the worker; every call still unresolved at a close's time limit fails."""

    __slots__ = ()

    name: str
    _lock: threading.Lock
    _crew: Crew
    _closing: bool
    _stopped: bool
    _exit_waiters: list[Waiter]
    _pending: set[Request]  # accepted and unresolved
    _finish_locked: Callable[..., bool]
    # Stop accepting (and with drain=False fail what is queued, saying why); returns the worker threads.
    _begin_close: Callable[[bool, str], list[threading.Thread]]

    def start(self) -> None:
        """Start the worker now instead of at the first call (it also starts by itself)."""
        with self._lock:
            if self._closing:
                raise BatcherClosed(f"batcher {self.name!r} is closed; create a new Batcher")
            if not self._crew.started:
                self._crew.start(self.name)

    def close(self, drain: bool = True, *, timeout: float | None = None) -> None:
        """Stop accepting calls; with ``drain`` run what is queued, else fail it with BatcherClosed.

        Blocks until the workers have stopped (every batch in flight finished), or for at most
        ``timeout`` seconds: then every call still queued or running fails with BatcherClosed and close
        returns, and a worker thread stuck in ``fn`` ends when ``fn`` returns.
        """
        if timeout is not None:
            check_option("timeout", timeout)
        threads = [t for t in self._begin_close(drain, "closed") if t is not threading.current_thread()]
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            self._abandon(timeout)

    async def aclose(self, drain: bool = True, *, timeout: float | None = None) -> None:
        """Async :meth:`close`: awaits the worker's exit (at most ``timeout`` seconds) without blocking the loop."""
        if timeout is not None:
            check_option("timeout", timeout)
        threads = [t for t in self._begin_close(drain, "closed") if t is not threading.current_thread()]
        if not threads:
            return
        waiter = AsyncWaiter(asyncio.get_running_loop())
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._exit_waiters.append(waiter)
        if not stopped:
            try:
                await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except TimeoutError:
                self._abandon(timeout)
                return
        # The last worker signals the exit as its last act: these joins are immediate, then the threads are gone.
        for thread in threads:
            thread.join()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`aclose` has been called."""
        return self._closing

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(drain=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose(drain=True)

    def _abandon(self, timeout: float | None) -> None:
        """close's time limit passed: fail every call still queued or running; the worker ends when fn returns."""
        logger.warning("microbatch: batcher %r did not stop within close(timeout=%s); failing its calls", self.name,
                       timeout)
        with self._lock:
            for request in list(self._pending):
                error: Any = BatcherClosed(
                    f"batcher {self.name!r} was closed with timeout={timeout}s before this call finished"
                )
                self._finish_locked(request, None, error, "cancelled")
