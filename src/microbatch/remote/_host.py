"""The model host: pulls requests for one batcher name from Redis and runs them through a real Batcher."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import msgpack
from redis.exceptions import NoScriptError, ResponseError

from .. import Batcher
from .._errors import CircuitOpen, DeadlineExceeded, Overloaded
from ._codec import Codec, MsgpackCodec
from ._redis import CONNECT_TIMEOUT, OUTAGE, async_client, redacted
from ._stats import stats_to_data
from ._wire import FINISH, GROUP, REPLY_TTL_MS, Header, Keys, Reply, Script, encode_error, encode_replies, stream_age

__all__ = ["Host", "serve"]

logger = logging.getLogger("microbatch.remote")

_BLOCK_MS = 500  # an XREADGROUP waits this long for work; a draining host stops after its current read
_MAX_BACKOFF = 1.0


class Host:
    """Serves ``batcher`` to every :class:`~microbatch.remote.RemoteBatcher` of the same name.

    It reads requests with XREADGROUP only while its own batcher has room (``prefetch`` items held,
    queued or running), so the rest waits in Redis for whichever host frees up first; runs each
    through ``batcher`` (priority, aging, adaptive wait, error isolation and stats all apply); and
    replies, acknowledges and deletes the entries of a batch in one Lua call. It keeps the idle time
    of the entries it holds fresh, and takes over entries another host left idle for ``claim_idle``
    seconds (a host that died). It publishes its stats every ``report_interval`` seconds.
    :meth:`stop` (or SIGTERM/SIGINT when run in the main thread) drains: it stops reading, finishes
    what it holds, then closes ``batcher``; a second signal exits at once, leaving unfinished
    entries for another host to claim.
    """

    __slots__ = ("batcher", "url", "keys", "codec", "prefetch", "claim_idle", "report_interval", "consumer",
                 "_loop", "_stopping", "_abort", "_redis", "_reader", "_tasks", "_client_cancelled", "_held",
                 "_room", "_freed", "_dirty", "_acks", "_replies", "_offset", "_group_ready", "_down_since",
                 "_expired_unrun", "_claimed", "_flushing")

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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[bytes, asyncio.Task[None]] = {}  # entries held, by stream id
        self._client_cancelled: set[bytes] = set()
        self._held = 0  # items held (queued or running in the batcher)
        self._acks: list[tuple[bytes, int]] = []  # finished entries, not yet acknowledged
        self._replies: dict[str, list[Reply]] = {}  # by reply key, not yet sent
        self._offset = 0.0  # Redis's clock minus ours, seconds
        self._group_ready = False
        self._down_since: float | None = None
        self._expired_unrun = self._claimed = 0
        self._flushing = False

    def __repr__(self) -> str:
        return (f"<Host {self.keys.name!r} {self.consumer} url={redacted(self.url)} held={self._held}/{self.prefetch} "
                f"expired_unrun={self._expired_unrun} claimed={self._claimed}>")

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Serve until stopped; blocks."""
        asyncio.run(self._main())

    def stop(self) -> None:
        """Drain and return from :meth:`run` (from any thread)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._request_stop)

    def _request_stop(self) -> None:
        if self._stopping.is_set():
            logger.warning("microbatch host %s: second stop, exiting without draining", self.consumer)
            self._abort.set()
        self._stopping.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()
        self._room = asyncio.Event()
        self._freed = asyncio.Event()
        self._dirty = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._request_stop)
        self._redis = async_client(self.url)
        self._reader = async_client(self.url, socket_timeout=_BLOCK_MS / 1000 + CONNECT_TIMEOUT + 1.0)
        self.batcher.start()
        logger.info("microbatch host %s serving %r from %s", self.consumer, self.keys.name, redacted(self.url))
        helpers = [asyncio.create_task(c) for c in (self._flush_loop(), self._heartbeat_loop(), self._cancel_loop())]
        reader = asyncio.create_task(self._read_loop())
        try:
            await self._stopping.wait()
            drained: asyncio.Future[Any] = asyncio.gather(reader, *self._tasks.values(), return_exceptions=True)
            abort: asyncio.Future[Any] = asyncio.create_task(self._abort.wait())
            await asyncio.wait([drained, abort], return_when=asyncio.FIRST_COMPLETED)
            if self._abort.is_set():
                reader.cancel()
                for task in list(self._tasks.values()):
                    task.cancel()
                await asyncio.gather(drained, return_exceptions=True)
            else:
                abort.cancel()
                while self._tasks:  # entries accepted by the reader's last read
                    await asyncio.gather(*self._tasks.values(), return_exceptions=True)
                await self._flush()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await self._redis.hdel(self.keys.hosts, self.consumer)
            except OUTAGE:
                pass
            await self.batcher.aclose(drain=not self._abort.is_set())
            await self._redis.aclose()
            await self._reader.aclose()
            logger.info("microbatch host %s stopped", self.consumer)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            room = self.prefetch - self._held
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                if not self._group_ready:
                    await self._ensure_group()
                response: Any = await self._reader.xreadgroup(
                    GROUP, self.consumer, {self.keys.requests: ">"}, count=room, block=_BLOCK_MS
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty, or someone deleted the stream
                    self._group_ready = False
                    continue
                raise
            except OUTAGE as exc:
                self._went_down(exc)
                await asyncio.sleep(backoff)  # pacing reconnection attempts, not synchronisation
                backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            backoff = 0.05
            self._came_back()
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    self._accept(entry_id, fields)

    async def _ensure_group(self) -> None:
        try:
            # From "0": requests queued before any host existed are served too.
            await self._reader.xgroup_create(self.keys.requests, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        seconds, micros = await self._reader.time()
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

    def _accept(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        """Take one entry: settle it at once if it cannot run, else start its task."""
        if entry_id in self._tasks:
            return  # already held (a claim of an entry this host holds)
        if not fields:
            self._finish(entry_id, 0, None, None)  # deleted by its cancelled caller after delivery
            return
        try:
            header = Header.unpack(fields[b"h"])
            payload = fields[b"p"]
        except Exception:
            logger.error("microbatch host %s: dropped unreadable entry %r", self.consumer, entry_id)
            self._finish(entry_id, 0, None, None)
            return
        if header.codec != self.codec.name:
            error: Exception = TypeError(
                f"the host of {self.keys.name!r} reads the {self.codec.name!r} codec but the client sent "
                f"{header.codec!r}: give both ends the same codec (an unread request is never unpickled)"
            )
            self._finish(entry_id, header.size, header, Reply(header.request_id, None, encode_error(error)))
            return
        left = None if header.timeout is None else header.timeout - stream_age(entry_id, self._offset)
        if left is not None and left <= 0:
            self._expired_unrun += header.size
            error = DeadlineExceeded(f"the request to {self.keys.name!r} passed its deadline before a host read it")
            self._finish(entry_id, header.size, header, Reply(header.request_id, None, encode_error(error)))
            return
        self._held += header.size
        self._tasks[entry_id] = asyncio.get_running_loop().create_task(self._run(entry_id, header, payload, left))

    async def _run(self, entry_id: bytes, header: Header, payload: bytes, left: float | None) -> None:
        reply: Reply | None = None
        started = time.monotonic()
        finish = True
        try:
            items = self.codec.decode(payload)
            if not isinstance(items, list) or len(items) != header.size:
                raise ValueError(f"the request's payload holds {len(items)} items, its header says {header.size}")
            while True:
                timeout = None if left is None else left - (time.monotonic() - started)
                try:
                    if header.single:
                        results = [await self.batcher.acall(items[0], timeout=timeout)]
                    else:
                        results = await self.batcher.amap(items, timeout=timeout)
                    break
                except CircuitOpen:
                    raise  # the model is failing: the caller hears it (with retry_after) instead of waiting here
                except Overloaded:
                    # A map larger than this host's free room: wait for the next finished entry.
                    freed = self._freed
                    await freed.wait()
            reply = Reply(header.request_id, self.codec.encode(results))
        except asyncio.CancelledError:
            # The caller gave up (nothing to reply), or a forced stop (leave the entry for another host).
            finish = entry_id in self._client_cancelled
            if not finish:
                raise
        except Exception as exc:
            reply = Reply(header.request_id, None, encode_error(exc))
        finally:
            self._client_cancelled.discard(entry_id)
            del self._tasks[entry_id]
            self._held -= header.size
            self._room.set()
            freed, self._freed = self._freed, asyncio.Event()
            freed.set()
            if finish:
                self._finish(entry_id, header.size, header, reply)

    # ------------------------------------------------------------------ replying

    def _finish(self, entry_id: bytes, size: int, header: Header | None, reply: Reply | None) -> None:
        self._acks.append((entry_id, size))
        if header is not None and reply is not None:
            self._replies.setdefault(header.reply_to, []).append(reply)
        self._dirty.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()  # what finishes during the flush goes in the next one
            await self._flush()

    async def _flush(self) -> None:
        """Send every pending reply and acknowledgement in one FINISH call; keep them on failure."""
        if not self._acks and not self._replies:
            return
        acks, self._acks = self._acks, []
        replies, self._replies = self._replies, {}
        args: list[Any] = [GROUP, REPLY_TTL_MS, len(acks)]
        for entry_id, size in acks:
            args += (entry_id, size)
        for key, batch in replies.items():
            args += (key, encode_replies(batch))
        backoff = 0.05
        while True:
            try:
                await self._eval(FINISH, [self.keys.requests, self.keys.waiting], args)
                return
            except OUTAGE as exc:
                self._went_down(exc)
                if self._abort.is_set() or (self._down_since is not None
                                            and time.monotonic() - self._down_since > 2 * self.claim_idle):
                    # The callers have failed by now (their link saw the outage): drop, another host may rerun.
                    logger.warning("microbatch host %s: dropped %d replies while Redis was down", self.consumer,
                                   len(acks))
                    return
                await asyncio.sleep(backoff)  # pacing reconnection attempts, not synchronisation
                backoff = min(_MAX_BACKOFF, backoff * 2)

    async def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(script.source)
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    # ------------------------------------------------------------------ liveness, claims, stats

    async def _heartbeat_loop(self) -> None:
        period = min(self.report_interval, self.claim_idle / 3)
        while True:
            try:
                await self._heartbeat()
            except OUTAGE as exc:
                self._went_down(exc)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    logger.warning("microbatch host %s: heartbeat failed: %s", self.consumer, exc)
                self._group_ready = False
            await asyncio.sleep(period)  # a period, not synchronisation

    async def _heartbeat(self) -> None:
        seconds, micros = await self._redis.time()
        self._offset = seconds + micros / 1e6 - time.time()
        report = {
            "at_ms": (seconds + micros / 1e6) * 1000.0,
            "stats": stats_to_data(self.batcher.stats),
            "max_batch_size": self.batcher.max_batch_size,
            "expired_unrun": self._expired_unrun,
            "claimed": self._claimed,
        }
        await self._redis.hset(self.keys.hosts, self.consumer, msgpack.packb(report, use_bin_type=True))
        if not self._group_ready or self._stopping.is_set():
            return
        held: list[Any] = list(self._tasks)
        if held:  # reset their idle time, so that no live host's work looks abandoned
            await self._redis.xclaim(self.keys.requests, GROUP, self.consumer, 0, held, justid=True)
        room = self.prefetch - self._held
        if room > 0:
            answer: Any = await self._redis.xautoclaim(
                self.keys.requests, GROUP, self.consumer, int(self.claim_idle * 1000), "0-0", count=room
            )
            claimed = answer[1]
            for entry_id, fields in claimed:
                if entry_id not in self._tasks:
                    self._claimed += 1
                    logger.info("microbatch host %s: claimed %r from a host that stopped", self.consumer, entry_id)
                self._accept(entry_id, fields)

    async def _cancel_loop(self) -> None:
        backoff = 0.05
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.cancel)
                    backoff = 0.05
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            self._cancelled_by_client(message["data"])
            except OUTAGE:
                await asyncio.sleep(backoff)  # pacing reconnection attempts, not synchronisation
                backoff = min(_MAX_BACKOFF, backoff * 2)

    def _cancelled_by_client(self, entry_id: bytes) -> None:
        task = self._tasks.get(entry_id)
        if task is not None and not task.done():
            self._client_cancelled.add(entry_id)
            task.cancel()


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


