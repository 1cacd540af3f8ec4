"""Async calls' timeouts: one loop timer for all the calls awaited on an event loop, not a timer each.

``loop.call_later`` per call costs a TimerHandle, a push and a pop through ``TimerHandle.__lt__``
(Python code) in the loop's heap, and the cancel: measured under ``load/bench_remote.py``'s asyncio
load, about a sixth of the client's CPU per call. Here the calls of one loop wait in a heap of plain
tuples ``(deadline, sequence, ...)`` (compared in C; the sequence breaks ties, so nothing else is ever
compared) with lazy removal of settled calls, as aiolimiter keeps its waiters, and one timer is set
for the earliest deadline. With the default timeout, deadlines arrive in order, so the timer is
rarely moved: it fires at the oldest call's deadline and mostly finds settled calls to drop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LoopDeadlines", "deadlines_of"]

logger = logging.getLogger("microbatch.remote")

#: (deadline as time.monotonic(), sequence, the caller's future, expire, its arguments)
_Entry = tuple[float, int, "asyncio.Future[Any]", Callable[..., None], tuple[Any, ...]]

_COMPACT_SLACK = 64  # settled entries tolerated beyond twice the live ones before the heap is rebuilt


class LoopDeadlines:
    """The deadlines of the calls awaited on one event loop; used from that loop's thread only.

    ``add`` a call's deadline when it starts, ``done`` when its caller resumes (whatever the outcome);
    at a deadline whose future is still pending, ``expire(*args)`` runs on the loop. The last ``done``
    drops the object from the registry, so a loop that is thrown away (``asyncio.run`` per request,
    ``async_to_sync``) leaves nothing behind.
    """

    __slots__ = ("loop", "_heap", "_live", "_timer", "_timer_at", "_sequence")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[_Entry] = []
        self._live = 0  # calls added and not done
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sequence = itertools.count()

    def add(self, deadline: float, future: asyncio.Future[Any], expire: Callable[..., None], *args: Any) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._sequence), future, expire, args))
        self._live += 1
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        elif len(heap) > 2 * self._live + _COMPACT_SLACK:
            self._heap = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(self._heap)

    def done(self) -> None:
        self._live -= 1
        if self._live == 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._heap.clear()
            if _by_loop.get(self.loop) is self:
                del _by_loop[self.loop]

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        now = time.monotonic()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future, expire, args = heapq.heappop(heap)
            if not future.done():
                try:
                    expire(*args)
                except Exception:  # the timer must be set again for the other calls, whatever happens
                    logger.exception("microbatch.remote: expiring a call raised; its caller waits for its result")
        if heap:
            self._arm(heap[0][0])

    def __repr__(self) -> str:
        next_at = self._timer_at if self._timer is not None else None
        return f"<LoopDeadlines live={self._live} held={len(self._heap)} next_at={next_at}>"


# Each loop's entry is touched only from that loop's thread; dict operations are atomic under the GIL.
_by_loop: dict[asyncio.AbstractEventLoop, LoopDeadlines] = {}


def deadlines_of(loop: asyncio.AbstractEventLoop) -> LoopDeadlines:
    """The running ``loop``'s deadlines, created on first use."""
    deadlines = _by_loop.get(loop)
    if deadlines is None:
        deadlines = _by_loop[loop] = LoopDeadlines(loop)
    return deadlines


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_by_loop.clear)  # the parent's loops do not run in a forked child
