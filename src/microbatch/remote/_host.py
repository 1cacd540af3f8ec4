"""The model host: pulls calls for one batcher name from Redis and feeds them to a real Batcher.

Plain threads on blocking redis-py connections (hiredis parses): a reader (XREADGROUP while the
batcher has room; the calls of a read go in with one :meth:`Batcher.submit_many`, no task or thread
per call: ``_reading``), a flusher (replies, acknowledgements and deletions of everything finished since its
last round trip, in one Lua call: ``_replying``), a heartbeat (stats, liveness of held entries, claims
of abandoned ones) and a cancel listener (pub/sub: ``_liveness``). The batcher's worker runs the model
and hands each outcome over; with a fast model the reader sends the replies in its next read's round
trip, sparing the flusher's.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import Batcher
from ._calls import Alarm
from ._codec import Codec, MsgpackCodec
from ._entries import Call, EarlyCancels, Entry
from ._liveness import Liveness
from ._reading import BLOCK_MS, Reading
from ._redis import CONNECT_TIMEOUT, OUTAGE, redacted, sync_client
from ._replying import Replying
from ._state import Outcome
from ._wire import Keys

__all__ = ["Host", "serve"]

logger = logging.getLogger("microbatch.remote")

_SIGNAL_POLL = 0.05  # how often run()'s thread looks at stop requests


class Host(Reading, Replying, Liveness):
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
        self._room = Alarm()  # rung when finished calls are taken (room freed): the reader may read again
        self._wake = Alarm()  # rung when a call finishes: the flusher sends its reply
        self._ready = Alarm()  # rung when a call finishes while the reader waits to carry the replies
        self._carrying = False  # the reader is about to take the finished calls: the flusher leaves them
        self._run_p50 = math.inf  # the batch function's run time p50, seconds (from the stats, each heartbeat)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._finished = threading.Event()  # set once run() is done with the helpers
        self._entries: dict[bytes, Entry] = {}  # held, by stream id
        self._held = 0  # items of submitted calls not finished yet
        self._acks: list[tuple[bytes, int]] = []  # entries settled without running, not yet acknowledged
        # Finished calls, appended by the batcher's worker without a lock, taken in bulk (by the flusher,
        # the reader or, for a lone call, the worker) under the lock.
        self._outcomes: deque[Outcome] = deque()
        self._unsent: list[list[Any]] = []  # FINISH arguments a failed direct or carried reply left for the flusher
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
        self._reader = sync_client(self.url, socket_timeout=BLOCK_MS / 1000 + CONNECT_TIMEOUT + 1.0)
        self.batcher.start()
        # What is alive now (the imports, the model) lives as long as the host: the collector's full passes,
        # set off by the calls a read brings in at once, need not walk it again and again.
        gc.freeze()
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
