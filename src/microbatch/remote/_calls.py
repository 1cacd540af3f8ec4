"""One call in flight from a client process, what resolves it, and the host's thread alarm.

A caller waits on the engine's own one-shot slots (:mod:`microbatch._waiters`: a lock for a thread,
a future on its loop for a coroutine), handed its :data:`Outcome` as the value and never as the
exception, so the caller counts every outcome before it raises one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._waiters import AsyncWaiter, SyncWaiter
from ._codec import Codec
from ._wire import Keys

__all__ = ["Alarm", "AsyncWaiter", "Call", "Mixed", "Outcome", "SyncWaiter", "Waiter"]


class Mixed:
    """A map's reply with some items failed (it asked for ``return_exceptions``): the codec's bytes of the
    results, None in each failed item's place, and those items' errors by index."""

    __slots__ = ("payload", "errors")

    def __init__(self, payload: bytes, errors: dict[int, BaseException]) -> None:
        self.payload = payload
        self.errors = errors

    def __repr__(self) -> str:
        return f"<Mixed failed={sorted(self.errors)}>"


#: What resolves a call: the codec's bytes of its results (with failed items apart: Mixed), or the exception
#: to raise.
Outcome = bytes | Mixed | BaseException


class Alarm:
    """Wakes one thread that waits for work: ``set`` from any thread (cheap when already set), ``wait`` consumes it.

    A plain lock, released to ring: far cheaper than a Condition's notify on a path taken per call.
    The engine's ``_wakeups.ThreadWakeup`` is the same lock, but its ``set`` on an alarm already
    rung raises and catches RuntimeError, where this one looks first: the host rings per finished
    call, so under load "already rung" is the common case. One class could serve both once the
    engine's took the look (an engine change, left to its owners).
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        if self._lock.locked():
            try:
                self._lock.release()
            except RuntimeError:
                pass  # another thread rang it at the same moment

    def wait(self, timeout: float | None) -> bool:
        """True if rung (and now reset), False at the timeout."""
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)

    def __repr__(self) -> str:
        return f"<Alarm {'quiet' if self._lock.locked() else 'ringing'}>"


Waiter = SyncWaiter | AsyncWaiter


class Call:
    """A request (one item, or a map's items) from admission to its reply.

    The link's table of calls decides who resolves it: whoever removes the call from the table
    (the sender on refusal, the listener on a reply, the caller on its timeout or cancellation).
    """

    __slots__ = ("keys", "codec", "limit", "request_id", "single", "size", "payload", "deadline", "started",
                 "waiter", "retry_after", "entry_id", "alone", "cancelled", "return_exceptions")

    def __init__(
        self, keys: Keys, codec: Codec, limit: int, single: bool, size: int, payload: bytes,
        deadline: float, started: float, waiter: Waiter, retry_after: Callable[[int], float],
    ) -> None:
        self.keys = keys
        self.codec = codec
        self.limit = limit  # the most items that may wait for this batcher name
        self.request_id = 0  # set by the link
        self.single = single
        self.size = size
        self.payload = payload
        self.deadline = deadline  # time.monotonic() value
        self.started = started
        self.waiter = waiter
        self.retry_after = retry_after  # seconds to suggest when refused with this many items too many
        self.entry_id: bytes | None = None  # the stream entry, once admitted
        self.alone = True  # no other call shares its entry (so cancelling may delete the entry)
        self.cancelled = False  # the caller gave up while its admission was on the wire
        self.return_exceptions = False  # a map that takes its failed items' errors in their places

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else ("queued" if self.entry_id is not None else "admitting")
        return f"<Call {self.keys.name!r} #{self.request_id} items={self.size} {state}>"


