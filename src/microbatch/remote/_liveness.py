"""The host's liveness: stats reports, keeping held entries fresh, claiming abandoned ones, hearing cancels."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgpack
from redis import Redis
from redis.exceptions import ResponseError

from ._redis import CONNECT_TIMEOUT, OUTAGE, clock_offset, sync_client
from ._state import HostState
from ._stats import stats_to_data
from ._wire import GROUP

__all__ = ["Liveness"]

logger = logging.getLogger("microbatch.remote")

_MAX_BACKOFF = 1.0


class Liveness(HostState):
    """The :class:`~microbatch.remote.Host`'s heartbeat and cancel listener (a mixin: the state is the host's)."""

    __slots__ = ()

    def _heartbeat_loop(self) -> None:
        period = min(self.report_interval, self.claim_idle / 3)
        while not self._finished.is_set():
            try:
                self._heartbeat()
            except OUTAGE as exc:
                self._went_down(exc)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    logger.warning("microbatch host %s: heartbeat failed: %s", self.consumer, exc)
                self._group_ready = False
            except Exception:  # never let the heartbeat die: a silent host looks dead and loses its work
                logger.exception("microbatch host %s: heartbeat failed", self.consumer)
            self._finished.wait(period)  # a period, not synchronisation

    def _heartbeat(self) -> None:
        redis_now, self._offset = clock_offset(self._redis)
        stats = self.batcher.stats
        if stats.batches:
            self._run_p50 = stats.run_time_p50
        report = {
            "at_ms": redis_now * 1000.0,
            "stats": stats_to_data(stats),
            "max_batch_size": self.batcher.max_batch_size,
            "expired_unrun": self._expired_unrun,
            "cancelled_unrun": self._cancelled_unrun,
            "claimed": self._claimed,
        }
        self._redis.hset(self.keys.hosts, self.consumer, msgpack.packb(report, use_bin_type=True))
        if not self._group_ready:
            return
        with self._lock:
            held: list[Any] = list(self._entries)
            room = self.prefetch - self._held
        if held:  # reset their idle time, so that no live host's work looks abandoned (draining too)
            self._redis.xclaim(self.keys.requests, GROUP, self.consumer, 0, held, justid=True)
        if room > 0 and not self._stopping.is_set():
            answer: Any = self._redis.xautoclaim(
                self.keys.requests, GROUP, self.consumer, int(self.claim_idle * 1000), "0-0",
                count=max(1, int(room / self._mean_entry)),
            )
            claimed: list[tuple[bytes, dict[bytes, bytes] | None]] = answer[1]
            with self._lock:
                new = [entry_id for entry_id, _ in claimed if entry_id not in self._entries]
                self._claimed += len(new)
            for entry_id in new:
                logger.info("microbatch host %s: claimed %r from a host that stopped", self.consumer, entry_id)
            if claimed:
                self._accept_safely(claimed)

    def _cancel_loop(self) -> None:
        backoff = 0.05
        listener: Redis = sync_client(self.url, socket_timeout=1.0 + CONNECT_TIMEOUT + 1.0)
        try:
            while not self._finished.is_set():
                try:
                    with listener.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                        pubsub.subscribe(self.keys.cancel)
                        backoff = 0.05
                        while not self._finished.is_set():
                            message = pubsub.get_message(timeout=1.0)
                            if message is not None and message.get("type") == "message":
                                self._cancelled_by_client(message["data"])
                except OUTAGE:
                    self._finished.wait(backoff)  # pacing reconnection attempts, not synchronisation
                    backoff = min(_MAX_BACKOFF, backoff * 2)
        finally:
            listener.close()

    def _cancelled_by_client(self, message: bytes) -> None:
        try:
            entry_id, request_text = message.split(b" ", 1)
            request_id = int(request_text)
        except ValueError:
            logger.warning("microbatch host %s: ignored a malformed cancel message %r", self.consumer, message)
            return
        cancel: Callable[[], None] | None = None
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                self._early.add(entry_id, request_id)  # not read yet (or by another host): drop it if read later
            else:
                call = entry.calls.get(request_id)  # None: done already
                if call is not None:
                    cancel = call.cancel
                    call.dropped = cancel is None  # parked, or being submitted right now
        if cancel is not None:
            cancel()
