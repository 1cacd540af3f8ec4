"""Coalescing identical in-flight items: the table of computations by key, and who waits on each item.

With ``coalesce`` on, a caller's request becomes a :class:`Ticket`, which is never queued itself.
Each of its items either joins the computation of an identical item (same key) already queued or
running, or starts a new one; the new ones of a request are queued together as one :class:`Job`,
which has no caller of its own. A job's item, once computed, settles its :class:`Entry`: the first
live subscriber gets the value, every other one its own ``copy.deepcopy`` (immutable values such as
numbers, strings and tuples of them come back from ``deepcopy`` as they are, so they are shared) or
its own copy of the exception. A caller that leaves (cancelled, expired) only unsubscribes; a job is
dropped when no live caller waits on any of its unsettled items. Keys stay in the table until their
item settles, so an identical item arriving meanwhile joins rather than recomputes.

Every method runs under the batcher's lock; callers are resolved through the batcher's ``finish``
(its ``_finish_locked``), the one place outcomes are decided.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Hashable
from typing import Any, Protocol, cast

from ._errors import MicrobatchError
from ._execute import clone
from ._request import Request
from ._waiters import Outbox, Waiter

__all__ = ["Coalescer", "Entry", "Job", "Ticket"]


class Finish(Protocol):
    def __call__(
        self, request: Request, value: Any, exc: BaseException | None, outcome: str, outbox: Outbox | None = None
    ) -> bool: ...


class Entry:
    """One computation in flight: the job item computing it and the ``(ticket, position)`` pairs waiting on it."""

    __slots__ = ("key", "job", "index", "subscribers", "settled")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.job: Job | None = None
        self.index = 0  # its item's position in the job
        self.subscribers: list[tuple[Ticket, int]] = []
        self.settled = False

    def __repr__(self) -> str:
        return f"<Entry {self.key!r} subscribers={len(self.subscribers)} settled={self.settled}>"


class Job(Request):
    """The queued computation of a request's new items; ``live`` counts live subscriptions to its unsettled items."""

    __slots__ = ("entries", "live")

    def __init__(
        self, items: list[Any], deadline: float | None, arrival: float, tokens: list[int] | None,
        keys: list[Hashable] | None,
    ) -> None:
        # A job has no caller: it is never resolved through a waiter.
        super().__init__(items, False, deadline, arrival, cast(Waiter, None), tokens, keys)
        self.entries: list[Entry] = []
        self.live = 0


class Ticket(Request):
    """A caller's request under coalescing: not queued (its cursor starts at the end); ``entries`` per item."""

    __slots__ = ("entries",)

    def __init__(
        self, items: list[Any], single: bool, deadline: float | None, arrival: float, waiter: Waiter,
        tokens: list[int] | None, keys: list[Hashable] | None = None,
    ) -> None:
        super().__init__(items, single, deadline, arrival, waiter, tokens, keys)
        self.cursor = self.size  # nothing of it is queued: discarding it frees no queue space
        self.entries: list[Entry] = []


class Coalescer:
    """The batcher's table of computations in flight, keyed by ``key(item)`` (True: the item and its type)."""

    __slots__ = ("_key", "_table", "name")

    def __init__(self, key: Callable[[Any], Hashable] | None, name: str) -> None:
        self._key = key
        self._table: dict[Hashable, Entry] = {}
        self.name = name

    def __repr__(self) -> str:
        return f"<Coalescer in_flight={len(self._table)}>"

    def keys(self, items: list[Any]) -> list[Hashable]:
        """Each item's key, checked hashable; called before the lock is taken (a key function may be slow)."""
        key = self._key
        keys: list[Hashable] = []
        for item in items:
            k = (type(item), item) if key is None else key(item)
            try:
                hash(k)
            except TypeError:
                if key is None:
                    raise TypeError(
                        f"coalesce=True needs hashable items, but batcher {self.name!r} got an unhashable "
                        f"{type(item).__name__}: pass coalesce=<a function returning a hashable key>, for "
                        "example coalesce=lambda item: tuple(item) or lambda array: array.tobytes()"
                    ) from None
                raise TypeError(
                    f"the coalesce key function of batcher {self.name!r} returned an unhashable "
                    f"{type(k).__name__}: it must return a hashable key (a str, bytes, tuple...)"
                ) from None
            keys.append(k)
        return keys

    def fresh(self, keys: list[Hashable]) -> int:
        """How many items of a request with these keys would start a new computation (duplicates count once)."""
        table = self._table
        return len({k for k in keys if k not in table})

    def admit(self, ticket: Ticket, keys: list[Hashable]) -> Job | None:
        """Subscribe ``ticket``'s items to their computations; the job of its new items, to queue, if any."""
        table = self._table
        new: list[int] = []
        for position, key in enumerate(keys):
            entry = table.get(key)
            if entry is None:
                entry = table[key] = Entry(key)
                new.append(position)
            entry.subscribers.append((ticket, position))
            ticket.entries.append(entry)
        job = None
        if new:
            tokens = None if ticket.tokens is None else [ticket.tokens[p] for p in new]
            groups = None if ticket.keys is None else [ticket.keys[p] for p in new]
            job = Job([ticket.items[p] for p in new], ticket.deadline, ticket.arrival, tokens, groups)
            job.entries = [ticket.entries[p] for p in new]
            for index, entry in enumerate(job.entries):
                entry.job, entry.index = job, index
        for entry in ticket.entries:
            joined = cast(Job, entry.job)
            joined.live += 1
            if joined.deadline is not None:  # a job is worth running until its last caller's deadline
                joined.deadline = None if ticket.deadline is None else max(joined.deadline, ticket.deadline)
        return job

    def dispatched(self, request: Request) -> int:
        """How many of ``request``'s items were dispatched: for a ticket, those whose computation was."""
        if not isinstance(request, Ticket):
            return request.cursor
        return sum(1 for entry in request.entries if cast(Job, entry.job).cursor > entry.index)

    def finishing(self, request: Request, exc: BaseException | None, outcome: str, finish: Finish,
                  outbox: Outbox | None) -> bool:
        """``request`` was just marked done; True if it is a job (no caller of its own to resolve).

        A job that ends before all its items settled (expired, dropped at close, found dead) passes
        its error to every live caller of those items; a ticket that ends unsubscribes, and a job
        nobody waits on any more is dropped.
        """
        if isinstance(request, Job):
            told = 0
            for entry in request.entries:
                if entry.settled:
                    continue
                for ticket, _ in self._settle(entry):
                    if exc is not None and finish(ticket, None, clone(exc) if told else exc, outcome, outbox):
                        told += 1
            return True
        if isinstance(request, Ticket):
            for entry in request.entries:
                job = cast(Job, entry.job)
                if entry.settled or job.done:
                    continue
                job.live -= 1
                if job.live == 0:
                    finish(job, None, asyncio.CancelledError(), "cancelled", outbox)
        return False

    def deliver(self, job: Job, start: int, stop: int, values: list[Any], offset: int, finish: Finish,
                outbox: Outbox) -> None:
        """Items ``start:stop`` of ``job`` computed ``values[offset:]``: every live caller of each gets its result."""
        for index in range(start, stop):
            entry = job.entries[index]
            if entry.settled:
                continue
            value = values[offset + index - start]
            for n, (ticket, position) in enumerate(self._settle(entry)):
                if ticket.done:
                    continue  # an earlier subscription of the same map failed it
                mine = value
                if n:
                    try:
                        mine = copy.deepcopy(value)
                    except Exception as exc:
                        error = MicrobatchError(
                            f"batcher {self.name!r} coalesced this item with an identical one, but copy.deepcopy "
                            f"cannot copy the result ({type(value).__name__}: {exc}); return copyable results or "
                            "turn coalesce off"
                        )
                        finish(ticket, None, error, "failed", outbox)
                        continue
                if ticket.single:
                    finish(ticket, mine, None, "completed", outbox)
                elif ticket.fill(position, position + 1, [mine], 0):
                    finish(ticket, ticket.results, None, "completed", outbox)
        self._ran(job, start, stop, finish, outbox)

    def fail(self, job: Job, start: int, stop: int, exc: BaseException, finish: Finish, outbox: Outbox) -> None:
        """Items ``start:stop`` of ``job`` failed: every live caller of each gets its own copy of ``exc``."""
        for index in range(start, stop):
            entry = job.entries[index]
            if entry.settled:
                continue
            for ticket, position in self._settle(entry):
                if ticket.done:
                    continue
                if ticket.return_exceptions:  # a map that takes its failed items' exceptions in their places
                    ticket.failed += 1
                    if ticket.fill(position, position + 1, [clone(exc)], 0):
                        finish(ticket, ticket.results, None, "completed", outbox)
                else:
                    finish(ticket, None, clone(exc) if outbox else exc, "failed", outbox)
        self._ran(job, start, stop, finish, outbox)

    def _ran(self, job: Job, start: int, stop: int, finish: Finish, outbox: Outbox) -> None:
        job.pending -= stop - start
        if job.pending == 0:
            finish(job, None, None, "completed", outbox)

    def _settle(self, entry: Entry) -> list[tuple[Ticket, int]]:
        """Take ``entry`` out of the table; its live subscriptions ``(ticket, position)``, in order."""
        entry.settled = True
        if self._table.get(entry.key) is entry:
            del self._table[entry.key]
        live = [(ticket, position) for ticket, position in entry.subscribers if not ticket.done]
        cast(Job, entry.job).live -= len(live)
        return live
