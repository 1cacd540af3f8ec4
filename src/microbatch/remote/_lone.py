"""A lone sync caller's round trip: its admission and a BLPOP on its own reply key in one write.

A call that is its process's only one in flight, from a thread that may block, need not pass
through the sender and listener threads: the caller writes the admission (whose entry names
:attr:`LoneCalls.direct_key` as its reply key) and a BLPOP on that key, and reads the host's reply
in the same round trip. That saves the two thread hand-offs of a queued call (measured with
``load/bench_remote.py``'s lone table). Under load calls queue for the sender as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import cast

from redis import Redis
from redis.exceptions import NoScriptError

from .._errors import MicrobatchError
from .._remote_errors import RedisUnavailable
from ._calls import Call, SyncWaiter
from ._channel import Channel
from ._redis import CONNECT_TIMEOUT, OUTAGE, redacted, server_after_outage
from ._wire import REPLY_TTL_MS, Script

__all__ = ["LoneCalls", "Op"]

logger = logging.getLogger("microbatch.remote")

_BLOCK = 1.0  # seconds a BLPOP waits before its thread checks whether it should stop
_OUTAGE_GRACE = 1.0  # how long a link tries to get back to the same Redis before failing calls

#: One script to run: the script, its arguments after the two keys' count, the calls it carries.
Op = tuple[Script, list[object], list[Call]]


class LoneCalls:
    """The lone-call half of :class:`~microbatch.remote._link.Link`, a mixin over its state (declared here)."""

    __slots__ = ("direct_key", "_direct_busy", "_direct_thread", "_direct_channel")

    url: str
    direct_key: str  # the reply key of lone calls; one lone caller at a time pops it
    _redis: Redis
    _lock: threading.Lock
    _calls: dict[int, Call]
    _closed: bool
    _direct_busy: bool  # a lone caller is in wait_lone
    _direct_thread: int  # its thread id, 0 if none
    _direct_channel: Channel
    _run_id: str | None  # the server the listener last saw

    # Implemented by Link; declared here for this part.
    def _ops(self, admits: list[Call], cancels: list[Call], reply_to: str) -> list[Op]:
        raise NotImplementedError

    def _admitted(self, calls: list[Call], result: object) -> None:
        raise NotImplementedError

    def _fail(self, calls: list[Call], error: Callable[[], BaseException]) -> None:
        raise NotImplementedError

    def _dispatch(self, blob: bytes) -> None:
        raise NotImplementedError

    def wait_lone(self, call: Call, waiter: SyncWaiter) -> bool:
        """Send a lone ``call`` (:meth:`submit` said so) and wait for its reply on the caller's thread.

        The admission and a BLPOP on :attr:`direct_key` (where this call's entry asks the host to
        reply) go in one write, so the reply comes back in the same round trip, with no sender or
        listener thread in between. Returns like ``waiter.wait``: True once resolved, False at the
        call's deadline. The stale replies of earlier lone calls that gave up are dispatched like
        the listener's; an empty element is a wake-up (a refusal, or ``close(drain=False)``).
        """
        channel = self._direct_channel
        try:
            first = True
            while True:
                if waiter.wait(0):
                    return True
                if call.request_id not in self._calls:  # another thread took it (close(drain=False)): it resolves it
                    return waiter.wait(None)
                left = call.deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                block = min(max(left, 0.002), _BLOCK)  # BLPOP's 0 means forever; it counts whole milliseconds
                pop = ("BLPOP", self.direct_key, block)
                try:
                    if first:
                        first = False
                        if not self._send_lone(channel, call, pop):
                            first = True  # refused (resolved) or the scripts were loaded: look again
                            continue
                    else:
                        channel.send([pop])
                    popped = channel.read(block + CONNECT_TIMEOUT)
                except OUTAGE as exc:
                    if call.entry_id is None:  # not admitted (or not known to be): as the sender fails it
                        message = (f"Redis at {redacted(self.url)} is unreachable ({exc}); the call was not sent: "
                                   "retry once Redis is back")
                        self._fail([call], partial(RedisUnavailable, message))
                    else:
                        self._lone_outage(call)
                    continue
                if isinstance(popped, Exception):
                    raise popped
                if popped is not None and popped[1]:
                    self._dispatch(cast(bytes, popped[1]))
        except Exception:  # as the sender: the caller gets a clear error, never a hang
            logger.exception("microbatch.remote: a lone call to %s failed", redacted(self.url))
            self._fail([call], lambda: MicrobatchError("microbatch.remote could not send the call; see the log"))
            return waiter.wait(0)
        finally:
            with self._lock:
                self._direct_busy = False
                self._direct_thread = 0
                closed = self._closed
            if closed:  # Link.close() left the lone connection to its caller
                channel.close()

    def _send_lone(self, channel: Channel, call: Call, pop: tuple[object, ...]) -> bool:
        """Write the lone call's admission and the BLPOP; read the admission's answer. False when it was
        not admitted: refused (the caller's waiter holds the error) or the scripts were missing (loaded
        now; send again). The BLPOP then waits for nothing, so it is woken at once."""
        ops = self._ops([call], [], self.direct_key)
        if not ops:
            return False  # no time left: the next pass returns
        script, args, calls = ops[0]
        channel.send([("EVALSHA", script.sha, 2, *args), pop])
        result = channel.read()
        missing = isinstance(result, NoScriptError)
        if not missing:
            self._admitted(calls, result)
        if call.entry_id is not None:
            return True
        self._wake_lone()  # the BLPOP behind the admission waits for nothing: end it
        popped = channel.read(CONNECT_TIMEOUT)
        if popped is not None and not isinstance(popped, Exception) and popped[1]:
            self._dispatch(cast(bytes, popped[1]))  # an earlier lone call's late reply
        if missing:  # a restarted or flushed Redis forgot the script; the next pass sends the call again
            channel.run([("SCRIPT", "LOAD", script.source)])
        return False

    def _lone_outage(self, call: Call) -> None:
        """Redis went away while a lone call waited: it survives if the same server answers again within
        the grace period (as the listener's calls do), else it fails now, not at its deadline."""
        until = min(time.monotonic() + _OUTAGE_GRACE, call.deadline)
        now_id = server_after_outage(self._redis, until, lambda: self._closed)
        if now_id is not None and (self._run_id is None or now_id == self._run_id):
            return  # the same server (another one would have lost the streams)
        self._fail([call], lambda: RedisUnavailable(f"Redis at {redacted(self.url)} went away while the call waited "
                                                    "for its result; it may or may not have run"))

    def _wake_lone(self) -> None:
        """Push an empty element to :attr:`direct_key`: a lone caller blocked in BLPOP looks at its call again."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(self.direct_key, b"")
        pipe.pexpire(self.direct_key, REPLY_TTL_MS)  # nobody may pop it: it must not outlive the client
        pipe.execute()
