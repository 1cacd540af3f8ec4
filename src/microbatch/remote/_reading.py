"""The host's reader: XREADGROUP while its batcher has room, the calls of each read handed over at once."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import ResponseError

from .._errors import CircuitOpen, DeadlineExceeded, Overloaded
from ._entries import Call, Entry, parse_entry
from ._redis import OUTAGE, clock_offset, redacted
from ._state import HostState
from ._wire import FINISH, GROUP, Header, added_ms

__all__ = ["BLOCK_MS", "Reading"]

logger = logging.getLogger("microbatch.remote")

BLOCK_MS = 500  # an XREADGROUP waits this long for work; a draining host stops after its current read
_CARRY_WAIT = 0.002  # how long the reader waits for the calls it just submitted, to carry their replies
_MAX_BACKOFF = 1.0
_POLL = 0.5  # how often a reader waiting for room also checks for a stop signal


class Reading(HostState):
    """The :class:`~microbatch.remote.Host`'s reader (a mixin: the state is the host's)."""

    __slots__ = ()

    def _read_loop(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            room = self.prefetch - self._held
            if room <= 0:
                self._room.wait(_POLL)
                continue
            try:
                if not self._group_ready:
                    self._ensure_group()
                response: Any = self._read(max(1, int(room / self._mean_entry)), self._carry())
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):  # NOGROUP: Redis restarted empty, or someone deleted the stream
                    logger.error("microbatch host %s: XREADGROUP failed: %s", self.consumer, exc)
                    self._stopping.wait(_MAX_BACKOFF)  # pacing retries, not synchronisation
                self._group_ready = False
                continue
            except OUTAGE as exc:
                self._went_down(exc)
                self._stopping.wait(backoff)  # pacing reconnection attempts, not synchronisation
                backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            backoff = 0.05
            self._came_back()
            for _stream, entries in response or []:
                self._accept_safely(entries)

    def _carry(self) -> list[Any] | None:
        """The FINISH arguments to send with the next read: the calls finished by now, and with a fast model
        (a median batch run in at most half of ``_CARRY_WAIT``, by the last stats) those just submitted:
        they finish within moments, so wait up to ``_CARRY_WAIT`` for them and reply in the read's round
        trip instead of one of the flusher's own. With a slow model the read never waits (new arrivals
        may join a batch forming now), and the flusher replies as batches end."""
        if self._held and self._run_p50 <= _CARRY_WAIT / 2 and not self._stopping.is_set():
            self._carrying = True  # from now on the flusher leaves finished calls to this thread
            if not self._outcomes:
                self._ready.wait(_CARRY_WAIT)
        replies, acks, parked = self._settle(carrying=True)
        if parked:
            self._resubmit(parked)
        return self._finish_args(acks, replies) if acks or replies else None

    def _read(self, count: int, finish: list[Any] | None) -> Any:
        """XREADGROUP (blocking up to ``BLOCK_MS``), after FINISH in the same round trip when there are
        replies to send; FINISH arguments that could not be sent go to the flusher."""
        if finish is None:
            return self._reader.xreadgroup(GROUP, self.consumer, {self.keys.requests: ">"}, count=count,
                                           block=BLOCK_MS)
        pipe = self._reader.pipeline(transaction=False)
        pipe.evalsha(FINISH.sha, 2, self.keys.requests, self.keys.waiting, *finish)
        pipe.xreadgroup(GROUP, self.consumer, {self.keys.requests: ">"}, count=count, block=BLOCK_MS)
        try:
            finished, response = pipe.execute(raise_on_error=False)
        except BaseException:
            self._unsend(finish)
            raise
        if isinstance(finished, Exception):  # NOSCRIPT (a restarted Redis): the flusher loads it and resends
            self._unsend(finish)
        if isinstance(response, Exception):
            raise response
        return response

    def _ensure_group(self) -> None:
        try:
            # From "0": requests queued before any host existed are served too.
            self._reader.xgroup_create(self.keys.requests, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        _, self._offset = clock_offset(self._reader)
        self._group_ready = True

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning("microbatch host %s: Redis at %s unreachable (%s); retrying", self.consumer,
                           redacted(self.url), exc)
        self._group_ready = False

    def _came_back(self) -> None:
        if self._down_since is not None:
            logger.warning("microbatch host %s: Redis is back after %.1fs", self.consumer,
                           time.monotonic() - self._down_since)
            self._down_since = None

    def _accept_safely(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        try:
            self._accept(entries)
        except Exception:  # the reader must outlive any entry; an unaccepted one is claimed again later
            logger.exception("microbatch host %s: could not accept entries %r", self.consumer,
                             [entry_id for entry_id, _ in entries])

    def _accept(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        """Take the entries of one read: settle at once the calls that cannot run, submit the others to the
        batcher in one step (so its worker finds them all queued when it wakes)."""
        parsed: list[tuple[bytes, str, list[tuple[Header, bytes]]]] = []
        unreadable: list[tuple[bytes, int]] = []
        for entry_id, fields in entries:
            try:
                reply_to, calls = parse_entry(fields or {})
            except Exception as exc:
                if fields:  # no fields: deleted by its cancelled caller after delivery
                    logger.error("microbatch host %s: dropped unreadable entry %r (%s)", self.consumer, entry_id, exc)
                unreadable.append((entry_id, 0))
                continue
            parsed.append((entry_id, reply_to, calls))
        now = time.monotonic()
        redis_ms = (time.time() + self._offset) * 1000.0  # Redis's clock now, for the entries' ages
        name = self.codec.name
        settled: list[tuple[Call, BaseException]] = []
        runnable: list[tuple[Call, bytes]] = []
        with self._lock:
            self._acks += unreadable
            for entry_id, reply_to, calls in parsed:
                if entry_id in self._entries:
                    continue  # already held (a claim of an entry this host holds, or a read and a claim)
                entry = self._entries[entry_id] = Entry(entry_id, reply_to, sum(header.size for header, _ in calls))
                self._mean_entry += 0.2 * (entry.size - self._mean_entry)
                dropped = self._early.pop(entry_id)
                age = (redis_ms - added_ms(entry_id)) / 1000.0
                for header, payload in calls:
                    call = entry.calls[header.request_id] = Call(
                        entry, header.request_id, header.size, header.return_exceptions
                    )
                    left = None if header.timeout is None else header.timeout - age
                    if dropped and header.request_id in dropped:
                        self._cancelled_unrun += header.size
                        settled.append((call, asyncio.CancelledError()))
                    elif header.codec != name:
                        settled.append((call, TypeError(
                            f"the host of {self.keys.name!r} reads the {name!r} codec but the client sent "
                            f"{header.codec!r}: give both ends the same codec (an unread request is never unpickled)")))
                    elif left is not None and left <= 0:
                        self._expired_unrun += header.size
                        settled.append((call, DeadlineExceeded(
                            f"the request to {self.keys.name!r} passed its deadline before a host read it")))
                    else:
                        call.held = header.size
                        call.deadline = None if left is None else now + left
                        runnable.append((call, payload))
                        self._held += header.size
        if unreadable:
            self._wake.set()
        for call, error in settled:
            self._done(call, None, error)
        decode = self.codec.decode
        ready: list[Call] = []
        for call, payload in runnable:
            try:
                items = decode(payload)
                if type(items) is not list or len(items) != call.size:
                    got = len(items) if isinstance(items, list) else type(items).__name__
                    raise ValueError(f"the request's payload holds {got} items, its header says {call.size}")
            except Exception as exc:
                self._done(call, None, exc)
                continue
            call.items = items
            ready.append(call)
        parked = self._submit(ready)
        if parked:
            with self._lock:
                self._parked += parked

    def _submit(self, calls: list[Call]) -> list[Call]:
        """Hand ``calls`` to the batcher in one step; returns those it has no room for now (to park), in order."""
        now = time.monotonic()
        requests: list[tuple[list[Any], Callable[[Any, BaseException | None], object], float | None, bool]] = []
        sent: list[Call] = []
        for call in calls:
            timeout = None if call.deadline is None else call.deadline - now
            if timeout is not None and timeout <= 0:
                self._done(call, None, DeadlineExceeded(
                    f"the request to {self.keys.name!r} passed its deadline waiting for room"))
                continue
            requests.append(
                (cast("list[Any]", call.items), functools.partial(self._done, call), timeout, call.return_exceptions)
            )
            sent.append(call)
        if not requests:
            return []
        outcomes = self.batcher.submit_many(requests)
        parked: list[Call] = []
        failed: list[tuple[Call, Exception]] = []
        cancels: list[Callable[[], None]] = []
        with self._lock:
            for call, outcome in zip(sent, outcomes, strict=True):
                if not isinstance(outcome, Exception):
                    call.cancel, call.items = outcome, None
                    if call.dropped:
                        cancels.append(outcome)  # its caller gave up while it was being submitted
                elif isinstance(outcome, Overloaded) and not isinstance(outcome, CircuitOpen):
                    parked.append(call)  # a map larger than the free room, or entries packed fuller than before
                else:
                    failed.append((call, outcome))  # CircuitOpen: the caller hears it (with retry_after) at once
        for call, error in failed:
            self._done(call, None, error)
        for cancel in cancels:
            cancel()
        return parked
