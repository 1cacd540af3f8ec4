"""The model host: pulls calls for one batcher name from Redis and feeds them to a real Batcher.

Plain threads on blocking redis-py connections (hiredis parses): a reader (XREADGROUP while the
batcher has room; each call goes in with :meth:`Batcher.submit`, no task or thread per call, here),
a flusher (replies, acknowledgements and deletions of everything finished since its last round
trip, in one Lua call: ``_replying``), a heartbeat (stats, liveness of held entries, claims of
abandoned ones) and a cancel listener (pub/sub: ``_liveness``). The batcher's worker runs the model
and hands each outcome to the flusher.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import ResponseError

from .. import Batcher
from .._errors import CircuitOpen, DeadlineExceeded, Overloaded
from ._calls import Alarm
from ._codec import Codec, MsgpackCodec
from ._entries import Call, EarlyCancels, Entry, parse_entry
from ._liveness import Liveness
from ._redis import CONNECT_TIMEOUT, OUTAGE, redacted, sync_client
from ._replying import Replying
from ._state import Outcome
from ._wire import FINISH, GROUP, Header, Keys, added_ms

__all__ = ["Host", "serve"]

logger = logging.getLogger("microbatch.remote")

_BLOCK_MS = 500  # an XREADGROUP waits this long for work; a draining host stops after its current read
_CARRY_WAIT = 0.002  # how long the reader waits for the calls it just submitted, to carry their replies
_MAX_BACKOFF = 1.0
_POLL = 0.5  # how often a thread waiting for a condition also checks for a stop signal
_SIGNAL_POLL = 0.05  # how often run()'s thread looks at stop requests


class Host(Replying, Liveness):
    """Serves ``batcher`` to every :class:`~microbatch.remote.RemoteBatcher` of the same name.

    It reads requests with XREADGROUP only while its own batcher has room (``prefetch`` items held,
    queued or running), so the rest waits in Redis for whichever host frees up first; runs each call
    through ``batcher`` (priority, aging, adaptive wait, error isolation and stats all apply); and
    replies, acknowledges and deletes finished entries in one Lua call per round trip. It keeps the
    idle time of the entries it holds fresh, and takes over entries another host left idle for
    ``claim_idle`` seconds (a host that died). It publishes its stats every ``report_interval`` seconds.
    :meth:`stop` (or SIGTERM/SIGINT when run in the main thread) drains: it stops reading, finishes
    what it holds, then closes ``batcher``; a second signal exits at once, leaving unfinished
    entries for another host to claim.
    """

    __slots__ = ()

    def __init__(
        self,
        batcher: Batcher[Any, Any],
        *,
        url: str,
        name: str | None = None,
        codec: Codec | None = None,
        prefetch: int | None = None,
        claim_idle: float = 5.0,
        report_interval: float = 1.0,
    ) -> None:
        if not isinstance(batcher, Batcher):
            raise TypeError(f"serve() needs a microbatch.Batcher, got {type(batcher).__name__}")
        if not 0 < claim_idle < 86_400:
            raise ValueError(f"claim_idle must be a number of seconds > 0, got {claim_idle!r}")
        if not 0 < report_interval <= claim_idle:
            raise ValueError(
                f"report_interval must be > 0 and at most claim_idle ({claim_idle}), got {report_interval!r}"
            )
        self.batcher = batcher
        self.url = url
        self.keys = Keys(name if name is not None else batcher.name)
        self.codec: Codec = MsgpackCodec() if codec is None else codec
        limit = batcher.max_queue_size
        self.prefetch = min(limit, 4 * batcher.max_batch_size) if prefetch is None else prefetch
        if not 1 <= self.prefetch <= limit:
            raise ValueError(f"prefetch must be between 1 and the batcher's max_queue_size ({limit}), got {prefetch!r}")
        self.claim_idle = claim_idle
        self.report_interval = report_interval
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._room = Alarm()  # rung by the flusher when calls finish: the reader may read again
        self._wake = Alarm()  # rung when a call finishes: the flusher sends its reply
        self._ready = Alarm()  # rung when a call finishes while the reader waits to carry the replies
        self._carrying = False  # the reader is about to take the finished calls: the flusher leaves them
        self._run_p99 = math.inf  # the batch function's run time p99, seconds (from the stats, each heartbeat)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._finished = threading.Event()  # set once run() is done with the helpers
        self._entries: dict[bytes, Entry] = {}  # held, by stream id
        self._held = 0  # items of submitted calls not finished yet
        self._acks: list[tuple[bytes, int]] = []  # entries settled without running, not yet acknowledged
        # Finished calls, appended by the batcher's worker without a lock, taken in bulk by the flusher.
        self._outcomes: deque[Outcome] = deque()
        self._unsent: list[list[Any]] = []  # FINISH arguments a failed direct reply left for the flusher
        self._parked: list[Call] = []  # calls waiting for room in the batcher, in order
        self._early = EarlyCancels()
        self._mean_entry = 1.0  # items per entry, recently: how many entries fill the room
        self._offset = 0.0  # Redis's clock minus ours, seconds
        self._group_ready = False
        self._down_since: float | None = None
        self._expired_unrun = self._cancelled_unrun = self._claimed = 0
        self._closing = False  # the flusher sends what is left and exits
        self._stop_requests = 0  # stop() calls and signals; turned into _stopping/_abort by run()'s thread

    def __repr__(self) -> str:
        return (f"<Host {self.keys.name!r} {self.consumer} url={redacted(self.url)} held={self._held}/{self.prefetch} "
                f"entries={len(self._entries)} expired_unrun={self._expired_unrun} claimed={self._claimed}>")

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Serve until stopped; blocks. In the main thread, SIGTERM and SIGINT stop it (twice: at once)."""
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self._request_stop())
        try:
            self._serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Drain and return from :meth:`run` (from any thread); a second call stops without draining."""
        self._request_stop()

    def _request_stop(self) -> None:
        # Runs in a signal handler too, which must take no lock (the interrupted code may hold it):
        # run()'s thread polls the count and sets the events.
        self._stop_requests += 1

    def _poll_stop(self, wait: Callable[[float], object]) -> None:
        """``wait`` a moment for something else, then turn stop requests into events."""
        wait(_SIGNAL_POLL)
        if self._stop_requests >= 1:
            self._stopping.set()
        if self._stop_requests >= 2 and not self._abort.is_set():
            logger.warning("microbatch host %s: second stop, exiting without draining", self.consumer)
            self._abort.set()

    def _serve(self) -> None:
        self._redis = sync_client(self.url)
        self._reader = sync_client(self.url, socket_timeout=_BLOCK_MS / 1000 + CONNECT_TIMEOUT + 1.0)
        self.batcher.start()
        logger.info("microbatch host %s serving %r from %s", self.consumer, self.keys.name, redacted(self.url))
        threads = {name: threading.Thread(target=target, name=f"microbatch-host-{name}", daemon=True)
                   for name, target in (("read", self._read_loop), ("flush", self._flush_loop),
                                        ("heartbeat", self._heartbeat_loop), ("cancel", self._cancel_loop))}
        for thread in threads.values():
            thread.start()
        try:
            while not self._stopping.is_set():
                self._poll_stop(self._stopping.wait)
            while threads["read"].is_alive():  # its last read's entries are accepted and run
                self._poll_stop(threads["read"].join)
            while self._entries and not self._abort.is_set():
                self._poll_stop(self._abort.wait)
        finally:
            self._closing = True
            self._wake.set()
            while threads["flush"].is_alive() and not self._abort.is_set():
                self._poll_stop(threads["flush"].join)
            self._finished.set()
            for name in ("heartbeat", "cancel"):
                threads[name].join(CONNECT_TIMEOUT + 2.0)
            try:
                self._redis.hdel(self.keys.hosts, self.consumer)
            except OUTAGE:
                pass
            self.batcher.close(drain=not self._abort.is_set())
            self._redis.close()
            self._reader.close()
            logger.info("microbatch host %s stopped", self.consumer)

    # ------------------------------------------------------------------ reading

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
        (batches that ran in at most half of ``_CARRY_WAIT``, by the last stats) those just submitted:
        they finish within moments, so wait up to ``_CARRY_WAIT`` for them and reply in the read's round
        trip instead of one of the flusher's own. With a slow model the read never waits (new arrivals
        may join a batch forming now), and the flusher replies as batches end."""
        if self._held and self._run_p99 <= _CARRY_WAIT / 2 and not self._stopping.is_set():
            self._carrying = True  # from now on the flusher leaves finished calls to this thread
            if not self._outcomes:
                self._ready.wait(_CARRY_WAIT)
        replies, acks, parked = self._settle(carrying=True)
        if parked:
            self._resubmit(parked)
        return self._finish_args(acks, replies) if acks or replies else None

    def _read(self, count: int, finish: list[Any] | None) -> Any:
        """XREADGROUP (blocking up to ``_BLOCK_MS``), after FINISH in the same round trip when there are
        replies to send; FINISH arguments that could not be sent go to the flusher."""
        if finish is None:
            return self._reader.xreadgroup(GROUP, self.consumer, {self.keys.requests: ">"}, count=count,
                                           block=_BLOCK_MS)
        pipe = self._reader.pipeline(transaction=False)
        pipe.evalsha(FINISH.sha, 2, self.keys.requests, self.keys.waiting, *finish)
        pipe.xreadgroup(GROUP, self.consumer, {self.keys.requests: ">"}, count=count, block=_BLOCK_MS)
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
        seconds, micros = self._reader.time()
        self._offset = seconds + micros / 1e6 - time.time()
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


def serve(
    batcher: Batcher[Any, Any],
    *,
    url: str,
    name: str | None = None,
    codec: Codec | None = None,
    prefetch: int | None = None,
    claim_idle: float = 5.0,
    report_interval: float = 1.0,
) -> None:
    """Serve ``batcher`` to the RemoteBatchers of ``name`` (default: ``batcher.name``) through Redis at ``url``.

    Blocks until SIGTERM/SIGINT (or :meth:`Host.stop`), then drains. See :class:`Host` for the options.
    """
    Host(batcher, url=url, name=name, codec=codec, prefetch=prefetch, claim_idle=claim_idle,
         report_interval=report_interval).run()
