"""The worker's alarms: how a sleeping worker is woken from any thread, on a lock or on its own loop."""

from __future__ import annotations

import asyncio
import threading

__all__ = ["MAX_SLEEP", "LoopWakeup", "ThreadWakeup"]

MAX_SLEEP = 3600.0  # a longer wait (max_wait_ms=inf) is taken in steps: sleep APIs overflow past TIMEOUT_MAX


class ThreadWakeup:
    """The sync worker's alarm: ``set`` from any thread, ``wait`` consumes it. A lock is the cheapest."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def clear(self) -> None:
        self._lock.acquire(blocking=False)

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:
            pass  # already set

    def wait(self, timeout: float | None) -> None:
        self._lock.acquire(timeout=-1 if timeout is None else min(timeout, MAX_SLEEP))


class LoopWakeup:
    """The async worker's alarm: an event on the worker's own loop, ``set`` from any thread."""

    __slots__ = ("_loop", "_event")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def set_here(self) -> None:
        """``set`` from the loop's own thread (a batch of this worker ended)."""
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), None if timeout is None else min(timeout, MAX_SLEEP))
        except TimeoutError:
            pass
