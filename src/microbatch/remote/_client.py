"""RemoteBatcher: a Batcher's call surface in front of model hosts reached through Redis Streams."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterable
from typing import Any, Generic, Literal, TypeVar, cast, overload

import msgpack

from .._admission import call_timeout
from .._errors import BatcherClosed, DeadlineExceeded, MicrobatchError
from .._remote_errors import RedisUnavailable
from . import _link
from ._calls import AsyncWaiter, Call, Mixed, Outcome, SyncWaiter, Waiter
from ._codec import Codec, MsgpackCodec
from ._deadlines import deadlines_of
from ._link import Link, acquire, release
from ._redis import OUTAGE, redacted
from ._stats import ClientStats, HostStats, RemoteStats, RoundTrips, merge, stats_from_data
from ._wire import Keys

__all__ = ["RemoteBatcher"]

T = TypeVar("T")
U = TypeVar("U")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_HOST_STALE = 10.0  # seconds without a report after which a host is taken for gone


class RemoteBatcher(Generic[T, U]):
    """Sends calls to the hosts serving ``name`` (see :func:`microbatch.remote.serve`) and waits for their results.

    The same surface as :class:`~microbatch.Batcher`: ``b(item)``, ``await b.acall(item)``,
    ``b.map(items)``, ``await b.amap(items)``, ``stats``, ``close``/``aclose``, ``with``/``async with``,
    from any thread and any event loop. Every call has a finite timeout (``timeout``, 30 s by default):
    with no live host it raises DeadlineExceeded then. Items travel through ``codec``
    (:class:`~microbatch.remote.MsgpackCodec` unless given); an item it cannot encode raises
    TypeError before anything is sent.

    * ``url``: the Redis URL, as redis-py reads it (``redis://user:password@host:port/db``,
      ``rediss://`` for TLS).
    * ``max_queue_size``: most items that may wait for ``name`` in Redis and at its hosts, over all
      clients; a call past it raises Overloaded at once, nothing enqueued.
    * Redis unreachable: calls raise :class:`~microbatch.remote.RedisUnavailable` within about a
      second; the connections come back by themselves.
    """

    __slots__ = ("name", "url", "timeout", "max_queue_size", "codec", "_keys", "_lock", "_drained", "_closing",
                 "_link", "_link_pid", "_inflight", "_submitted", "_completed", "_failed", "_rejected", "_expired",
                 "_cancelled", "_unavailable", "_round_trips", "_hosts", "__weakref__")

    def __init__(
        self,
        name: str,
        *,
        url: str = DEFAULT_URL,
        timeout: float = 30.0,
        max_queue_size: int = 10_000,
        codec: Codec | None = None,
    ) -> None:
        self._keys = Keys(name)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"a RemoteBatcher's timeout must be a finite number of seconds > 0, got {timeout!r}")
        if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int) or max_queue_size < 1:
            raise ValueError(f"max_queue_size must be an int >= 1, got {max_queue_size!r}")
        codec = MsgpackCodec() if codec is None else codec
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must have name, encode(value) and decode(data), got {codec!r}")
        self.name = name
        self.url = url
        self.timeout: float = float(timeout)
        self.max_queue_size = max_queue_size
        self.codec = codec
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._closing = False
        self._link: Link | None = None
        self._link_pid = -1  # the fork generation its link belongs to
        self._inflight: set[Call] = set()
        self._submitted = self._completed = self._failed = self._rejected = 0
        self._expired = self._cancelled = self._unavailable = 0
        self._round_trips = RoundTrips()
        self._hosts: dict[str, HostStats] = {}

    # ------------------------------------------------------------------ calls

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` (always one item) at a host; block until its result."""
        return self._call_sync([item], True, timeout)[0]  # type: ignore[no-any-return]

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` at a host from any event loop; cancelling the await tells the hosts to drop it."""
        return (await self._call_async([item], True, timeout))[0]  # type: ignore[no-any-return]

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

        With ``return_exceptions`` an item whose batch function call failed at the host (after
        isolation) has its exception in its place, as :meth:`Batcher.map <microbatch.Batcher.map>` does;
        errors of the map as a whole (Overloaded, DeadlineExceeded, RedisUnavailable...) are still raised.
        """
        batch = list(items)
        return self._call_sync(batch, False, timeout, return_exceptions) if batch else []

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
        batch = list(items)
        return await self._call_async(batch, False, timeout, return_exceptions) if batch else []

    def _prepare(
        self, items: list[Any], single: bool, timeout: float | None, waiter: Waiter, return_exceptions: bool = False
    ) -> tuple[Call, float, Link, bool]:
        # The same rules as Batcher's calls: a bad explicit timeout raises, a passed ambient deadline
        # leaves no time; the default is finite, so there is always a number.
        seconds = call_timeout(timeout, self.timeout)
        if seconds is None:
            seconds = self.timeout
        payload = self.codec.encode(items)  # TypeError here: nothing was sent
        if seconds <= 0:
            with self._lock:
                self._rejected += len(items)
            raise DeadlineExceeded(
                f"the call to remote batcher {self.name!r} had no time left (timeout={seconds:.3g}s)"
            )
        now = time.monotonic()
        call = Call(self._keys, self.codec, self.max_queue_size, single, len(items), payload, now + seconds, now,
                    waiter, self._retry_after)
        call.return_exceptions = return_exceptions
        link = self._get_link()
        with self._lock:
            if self._closing:
                self._rejected += len(items)
                raise BatcherClosed(f"remote batcher {self.name!r} is closed and accepts no calls")
            self._inflight.add(call)
            self._submitted += len(items)
        lone = link.submit(call, may_block=waiter.__class__ is SyncWaiter)
        return call, seconds, link, lone

    def _call_sync(
        self, items: list[Any], single: bool, timeout: float | None, return_exceptions: bool = False
    ) -> list[Any]:
        waiter = SyncWaiter()
        call, seconds, link, lone = self._prepare(items, single, timeout, waiter, return_exceptions)
        try:
            if not (link.wait_lone(call, waiter) if lone else waiter.wait(seconds)):
                if link.forget(call):
                    return self._settle(call, self._expired_error(call))
                waiter.wait(None)  # resolved at the same moment: its outcome is on the way
        except BaseException:
            # KeyboardInterrupt while blocked: the caller is gone, so is its claim on the hosts.
            if link.cancel(call):
                self._settle(call, asyncio.CancelledError(), raise_it=False)
            raise
        outcome = waiter.value
        if outcome is None:  # not under -O only: a woken waiter always carries its outcome
            raise MicrobatchError(f"internal error in remote batcher {self.name!r}: a call woke without an outcome")
        return self._settle(call, outcome)

    async def _call_async(
        self, items: list[Any], single: bool, timeout: float | None, return_exceptions: bool = False
    ) -> list[Any]:
        loop = asyncio.get_running_loop()
        waiter = AsyncWaiter(loop)
        call, _, link, _ = self._prepare(items, single, timeout, waiter, return_exceptions)
        future = waiter.future
        deadlines = deadlines_of(loop)
        deadlines.add(call.deadline, future, self._expire, link, call)
        try:
            outcome = await future
        except asyncio.CancelledError:
            if link.cancel(call):
                self._settle(call, asyncio.CancelledError(), raise_it=False)
            raise
        finally:
            deadlines.done()
        return self._settle(call, outcome)

    def _expire(self, link: Link, call: Call) -> None:
        future = cast(AsyncWaiter, call.waiter).future
        if link.forget(call) and not future.done():
            future.set_result(self._expired_error(call))

    def _expired_error(self, call: Call) -> DeadlineExceeded:
        what = "call" if call.single else f"map of {call.size} items"
        where = "waiting for a host" if call.entry_id is not None else "before Redis accepted it"
        return DeadlineExceeded(
            f"the {what} to remote batcher {self.name!r} passed its deadline {where}; "
            "is a host serving it? (microbatch serve ... --name " + self.name + ")"
        )

    def _settle(self, call: Call, outcome: Outcome, raise_it: bool = True) -> list[Any]:
        """Count the call's outcome, then return its results or raise its error."""
        n = call.size
        if isinstance(outcome, BaseException):
            error: BaseException = outcome
        else:
            mixed, payload = (outcome, outcome.payload) if isinstance(outcome, Mixed) else (None, outcome)
            try:
                results = self.codec.decode(payload)
                if mixed is not None and isinstance(results, list) and len(results) == n:
                    for index, item_error in mixed.errors.items():
                        results[index] = item_error  # an IndexError here is a malformed reply, as below
            except Exception as exc:
                error = MicrobatchError(f"the host's reply could not be decoded: {exc!r}")
            else:
                if isinstance(results, list) and len(results) == n:  # the path every served call takes
                    failed = 0 if mixed is None else len(mixed.errors)  # returned in their places
                    elapsed = time.monotonic() - call.started
                    with self._lock:
                        self._inflight.discard(call)
                        self._completed += n - failed
                        self._failed += failed
                        if not self._inflight:
                            self._drained.notify_all()
                    self._round_trips.add(elapsed)
                    return results
                got = len(results) if isinstance(results, list) else type(results).__name__
                error = MicrobatchError(f"the host sent {got} results for {n} items")
        with self._lock:
            self._inflight.discard(call)
            if isinstance(error, DeadlineExceeded):
                self._expired += n
            elif isinstance(error, asyncio.CancelledError):
                self._cancelled += n
            elif isinstance(error, RedisUnavailable) and call.entry_id is None:
                self._rejected += n
                self._submitted -= n  # never reached Redis: refused like Overloaded
                self._unavailable += n
            elif isinstance(error, RedisUnavailable):
                self._failed += n
                self._unavailable += n
            elif type(error).__name__ == "Overloaded":
                self._rejected += n
                self._submitted -= n
            else:
                self._failed += n
            if not self._inflight:
                self._drained.notify_all()
        if raise_it:
            raise error
        return []

    def _retry_after(self, excess: int) -> float:
        """Seconds until about ``excess`` items have drained, from the hosts' last reported cost model."""
        per_item = [h.stats.per_item_cost for h in self._hosts.values() if h.stats.per_item_cost]
        if not per_item:
            return 1.0
        return max(0.05, excess * min(per_item) / len(per_item))

    # ------------------------------------------------------------------ lifetime

    def _get_link(self) -> Link:
        link = self._link
        if link is None or self._link_pid != _link.generation:  # no getpid() per call: it is a system call
            with self._lock:
                if self._link is None or self._link_pid != _link.generation:
                    self._link = acquire(self.url)
                    self._link_pid = _link.generation
                link = self._link
        return link

    def start(self) -> None:
        """Open the process's link to Redis now rather than at the first call (Redis need not be up yet)."""
        if self._closing:
            raise BatcherClosed(f"remote batcher {self.name!r} is closed; create a new RemoteBatcher")
        self._get_link()

    def close(self, drain: bool = True) -> None:
        """Stop accepting calls; with ``drain`` wait for the calls in flight (each within its timeout),
        else fail them with BatcherClosed and tell the hosts to drop them. Blocks until done."""
        calls = self._begin_close(drain)
        with self._lock:
            while self._inflight and drain:
                self._drained.wait()
        self._end_close(calls)

    async def aclose(self, drain: bool = True) -> None:
        """Async :meth:`close`: awaits the calls in flight without blocking the loop."""
        calls = self._begin_close(drain)
        if drain:
            await asyncio.to_thread(self._wait_drained)
        self._end_close(calls)

    def _wait_drained(self) -> None:
        with self._lock:
            while self._inflight:
                self._drained.wait()

    def _begin_close(self, drain: bool) -> list[Call]:
        with self._lock:
            self._closing = True
            return [] if drain else list(self._inflight)

    def _end_close(self, dropped: list[Call]) -> None:
        link = self._link
        if link is None:
            return
        for call in dropped:
            if link.cancel(call):
                call.waiter.resolve(BatcherClosed(f"remote batcher {self.name!r} was closed with drain=False"), None)
        with self._lock:
            link, self._link = self._link, None
        if link is not None and self._link_pid == _link.generation:
            release(link)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`aclose` has been called."""
        return self._closing

    def __enter__(self) -> RemoteBatcher[T, U]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(drain=True)

    async def __aenter__(self) -> RemoteBatcher[T, U]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose(drain=True)

    # ------------------------------------------------------------------ observability

    @property
    def max_batch_size(self) -> int:
        """The largest ``max_batch_size`` among the hosts last seen (1 before any host reported)."""
        return max((h.max_batch_size for h in self._hosts.values()), default=1)

    @property
    def stats(self) -> RemoteStats:
        """This client's counts and round trips beside the live hosts' published stats (read from Redis now;
        with Redis unreachable, the hosts last seen)."""
        self._hosts = self._read_hosts()
        return merge(self.name, self._hosts, self.client_stats())

    def client_stats(self) -> ClientStats:
        """This process's side alone, without a Redis round trip."""
        p50, p99 = self._round_trips.percentiles()
        with self._lock:
            return ClientStats(
                submitted=self._submitted, completed=self._completed, failed=self._failed, rejected=self._rejected,
                expired=self._expired, cancelled=self._cancelled, unavailable=self._unavailable,
                round_trip_p50=p50, round_trip_p99=p99, window=1024,
            )

    def _read_hosts(self) -> dict[str, HostStats]:
        try:
            raw = self._get_link().redis.hgetall(self._keys.hosts)
        except OUTAGE:
            return self._hosts
        hosts: dict[str, HostStats] = {}
        now_ms = None
        for consumer, blob in raw.items():
            try:
                data = msgpack.unpackb(blob, raw=False)
                now_ms = now_ms if now_ms is not None else self._redis_ms()
                age = (now_ms - data["at_ms"]) / 1000.0
                if age > _HOST_STALE:
                    continue
                name = consumer.decode() if isinstance(consumer, bytes) else str(consumer)
                hosts[name] = HostStats(
                    consumer=name, stats=stats_from_data(data["stats"]), max_batch_size=int(data["max_batch_size"]),
                    expired_unrun=int(data["expired_unrun"]), claimed=int(data["claimed"]), age=max(0.0, age),
                    cancelled_unrun=int(data.get("cancelled_unrun", 0)),
                )
            except (ValueError, KeyError, TypeError):
                continue  # a report from another version: skip it rather than fail the scrape
        return hosts

    def _redis_ms(self) -> float:
        seconds, micros = self._get_link().redis.time()
        return seconds * 1000.0 + micros / 1000.0

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return (f"<RemoteBatcher {self.name!r} {state} url={redacted(self.url)} timeout={self.timeout} "
                f"in_flight={len(self._inflight)} completed={self._completed}>")
