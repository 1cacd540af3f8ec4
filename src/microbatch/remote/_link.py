"""A client process's link to one Redis: one sender thread, one listener thread, one reply key.

Every :class:`~microbatch.remote.RemoteBatcher` of a process that uses the same URL shares it, so a
process holds a fixed handful of Redis connections however many calls wait (the sender's, the
listener's, a lone caller's, one for plain commands). The sender sends whatever callers queued
since its last round trip in one pipelined round trip (the calls for one batcher name packed into
one stream entry by one EVALSHA, and the cancellations); the listener pops this process's reply key
and hands each result to its caller's thread or event loop. A lone call from a thread skips both
threads (see :mod:`~microbatch.remote._lone`).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from redis import Redis
from redis.exceptions import NoScriptError

from .._errors import MicrobatchError, Overloaded
from .._remote_errors import RedisUnavailable
from .._waiters import send
from ._calls import Alarm, Call, Mixed, Outcome
from ._channel import Channel
from ._lone import _BLOCK, _OUTAGE_GRACE, LoneCalls, Op
from ._redis import CONNECT_TIMEOUT, OUTAGE, redacted, server_after_outage, sync_client
from ._wire import (
    ADMIT,
    CANCEL,
    MAX_CALLS_PER_ENTRY,
    decode_error,
    decode_replies,
    pack_header,
    reply_key,
)

__all__ = ["Link", "acquire", "release"]

logger = logging.getLogger("microbatch.remote")

#: The host is told a call has this much less time than its caller waits (at most a twentieth of it):
#: a host reckons deadlines on its own clock, from an estimate of Redis's, which may run a few ms
#: late on a busy machine; the margin keeps it from running an item whose caller already gave up.
_HOST_MARGIN = 0.010


class Link(LoneCalls):
    """One process's connection to one Redis URL; see the module docstring."""

    __slots__ = ("url", "client_id", "reply_key", "_redis", "_lock", "_wake", "_outbox", "_cancels", "_calls",
                 "_ids", "_sender", "_listener", "_users", "_closed", "_send_channel", "_run_id", "__weakref__")

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.reply_key = reply_key(self.client_id)
        self.direct_key = self.reply_key + ":lone"  # the replies a lone caller pops itself
        self._redis = sync_client(url)
        self._lock = threading.Lock()
        self._wake = Alarm()  # rung when the sender has something to send
        self._outbox: list[Call] = []  # admissions not yet sent
        self._cancels: list[Call] = []  # admitted entries whose callers gave up
        self._calls: dict[int, Call] = {}  # every unresolved call, by request id
        self._ids = itertools.count(1)
        self._users = 0
        self._closed = False
        self._direct_busy = False  # a lone caller is sending its call and waiting for the reply itself
        self._direct_thread = 0  # that caller's thread id
        self._send_channel = Channel(self._redis)  # the sender thread's connection
        self._direct_channel = Channel(self._redis)  # the lone caller's connection
        self._run_id: str | None = None  # the Redis server the listener last saw (a restart loses the streams)
        self._sender = threading.Thread(target=self._send_loop, name=f"microbatch-remote-send[{redacted(url)}]",
                                        daemon=True)
        self._listener = threading.Thread(target=self._listen_loop,
                                          name=f"microbatch-remote-listen[{redacted(url)}]", daemon=True)
        self._sender.start()
        self._listener.start()

    @property
    def redis(self) -> Redis:
        """A client for plain commands (stats reads); it shares nothing with the two threads' connections."""
        return self._redis

    def __repr__(self) -> str:
        return (f"<Link {redacted(self.url)} reply_key={self.reply_key!r} waiting={len(self._calls)} "
                f"users={self._users}{' closed' if self._closed else ''}>")

    # ---------------------------------------------------------------- called by callers

    def submit(self, call: Call, *, may_block: bool) -> bool:
        """Queue ``call`` for the sender thread, which pipelines what callers queued since its last round
        trip; or, for a thread that may block (not an event loop) when its call is the process's only
        one in flight, return True: the caller then sends and waits itself with :meth:`wait_lone`.
        Under load a caller sending its own round trip costs more CPU per item than the hop through
        the sender (measured with load/bench_remote.py), so only a lone call goes direct."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this link is closed")  # unreachable through RemoteBatcher
            call.request_id = next(self._ids)
            self._calls[call.request_id] = call
            if may_block and len(self._calls) == 1 and not self._direct_busy:
                self._direct_busy = True
                self._direct_thread = threading.get_ident()
                return True
            self._outbox.append(call)
            if len(self._outbox) == 1:
                self._wake.set()
            return False

    def forget(self, call: Call) -> bool:
        """Take ``call`` out of the table (its caller stopped waiting); False if it was resolved meanwhile."""
        with self._lock:
            return self._calls.pop(call.request_id, None) is not None

    def cancel(self, call: Call) -> bool:
        """As :meth:`forget`, and tell the hosts to drop the entry (best effort)."""
        with self._lock:
            if self._calls.pop(call.request_id, None) is None:
                return False
            call.cancelled = True
            if call.entry_id is not None:
                self._cancels.append(call)
                self._wake.set()
            # Not sent yet: the sender skips it. On the wire: the sender queues the cancel on its answer.
            lone_elsewhere = self._direct_thread not in (0, threading.get_ident())
        if lone_elsewhere:  # close(drain=False) from another thread: the lone caller may be in its BLPOP
            try:
                self._wake_lone()
            except OUTAGE:
                pass  # it notices at its next BLPOP timeout
        return True

    # ---------------------------------------------------------------- the sender thread

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                admits, self._outbox = self._outbox, []
                cancels, self._cancels = self._cancels, []
                closed = self._closed
            if not admits and not cancels:
                if closed:
                    return
                self._wake.wait(None)
                continue
            try:
                self._send(self._send_channel, admits, cancels)
            except Exception:  # never let the sender die: its callers would wait for their timeouts
                logger.exception("microbatch.remote: sending to %s failed", redacted(self.url))
                self._fail(admits, lambda: MicrobatchError("microbatch.remote's sender failed; see the log"))

    def _send(self, channel: Channel, admits: list[Call], cancels: list[Call]) -> None:
        """One pipelined round trip: the calls for each batcher name packed into one entry, then the cancels."""
        ops = self._ops(admits, cancels, self.reply_key)
        if not ops:
            return
        try:
            results = self._execute(channel, ops)
        except OUTAGE as exc:
            message_text = (f"Redis at {redacted(self.url)} is unreachable ({exc}); "
                            "the call was not sent: retry once Redis is back")
            self._fail([call for script, _, calls in ops if script is ADMIT for call in calls],
                       lambda: RedisUnavailable(message_text))
            return
        for (script, _, calls), result in zip(ops, results, strict=True):
            if script is ADMIT:
                self._admitted(calls, result)

    def _ops(self, admits: list[Call], cancels: list[Call], reply_to: str) -> list[Op]:
        """The scripts to run: one ADMIT per batcher name (and per MAX_CALLS_PER_ENTRY calls), then the cancels."""
        now = time.monotonic()
        groups: dict[str, list[Call]] = {}
        for call in admits:
            if call.cancelled or call.deadline <= now:
                continue  # nothing is sent for a call that has no time left: its caller's timer fires now
            groups.setdefault(call.keys.requests, []).append(call)
        ops: list[Op] = []
        for calls in groups.values():
            for first in range(0, len(calls), MAX_CALLS_PER_ENTRY):
                chunk = calls[first:first + MAX_CALLS_PER_ENTRY]
                keys = chunk[0].keys
                args: list[object] = [keys.requests, keys.waiting, reply_to]
                for call in chunk:
                    left = call.deadline - now
                    header = pack_header(call.request_id, call.single, left - min(_HOST_MARGIN, left / 20), call.size,
                                         call.codec.name, call.return_exceptions)
                    args += (call.size, call.limit, header, call.payload)
                ops.append((ADMIT, args, chunk))
        for call in cancels:
            keys = call.keys
            message = b"%s %d" % (call.entry_id or b"", call.request_id)
            ops.append((CANCEL, [keys.requests, keys.waiting, call.entry_id, call.size, keys.cancel, message,
                                 "1" if call.alone else "0"], [call]))
        return ops

    @staticmethod
    def _execute(channel: Channel, ops: list[Op]) -> list[object]:
        commands = [("EVALSHA", script.sha, 2, *args) for script, args, _ in ops]
        results = channel.run(commands)
        if any(isinstance(r, NoScriptError) for r in results):
            # A restarted or flushed Redis forgot the scripts: load them and send the lot again.
            # Only NOSCRIPT failures can be in the results, and they changed nothing.
            channel.run([("SCRIPT", "LOAD", script.source) for script in {script for script, _, _ in ops}])
            results = channel.run(commands)
        return results

    def _admitted(self, calls: list[Call], result: object) -> None:
        if isinstance(result, Exception):
            self._fail(calls, lambda: MicrobatchError(f"Redis refused the call: {result}"))
            return
        entry_id, *verdicts = cast("list[Any]", result)
        accepted = [call for call, waiting in zip(calls, verdicts, strict=True) if waiting < 0]
        if accepted:
            alone = len(accepted) == 1
            with self._lock:
                for call in accepted:
                    call.entry_id = entry_id
                    call.alone = alone
                    if call.cancelled:
                        self._cancels.append(call)
                if self._cancels:
                    self._wake.set()
        for call, waiting in zip(calls, verdicts, strict=True):
            if waiting >= 0:
                self._refused(call, int(waiting))

    def _refused(self, call: Call, waiting: int) -> None:
        retry_after = call.retry_after(waiting + call.size - call.limit)
        self._fail([call], lambda: Overloaded(
            f"remote batcher {call.keys.name!r} has {waiting} items waiting (max_queue_size={call.limit}); "
            f"retry in {retry_after:.3g}s", retry_after=retry_after))

    def _fail(self, calls: list[Call], error: Callable[[], BaseException]) -> None:
        with self._lock:
            mine = [call for call in calls if self._calls.pop(call.request_id, None) is not None]
        _resolve_all([(call, error()) for call in mine])

    # ---------------------------------------------------------------- the listener thread

    def _listen_loop(self) -> None:
        listen = sync_client(self.url, socket_timeout=_BLOCK + CONNECT_TIMEOUT + 1.0)
        channel = Channel(listen)
        pop = [("BLPOP", self.reply_key, _BLOCK)]
        try:
            while not self._closed:
                try:
                    if self._run_id is None:
                        self._run_id = str(listen.info("server")["run_id"])
                    popped = channel.run(pop)[0]
                except OUTAGE:
                    self._run_id = self._ride_out_outage(listen, self._run_id)
                    continue
                if isinstance(popped, Exception):
                    raise popped
                if popped is not None and popped[1]:
                    self._dispatch(cast(bytes, popped[1]))
        finally:
            channel.close()
            listen.close()

    def _dispatch(self, blob: bytes) -> None:
        try:
            replies = decode_replies(blob)
        except Exception:
            logger.exception("microbatch.remote: an unreadable reply on %s was dropped", self.reply_key)
            return
        calls = self._calls
        with self._lock:
            ready = [(calls.pop(reply[0], None), reply) for reply in replies]
        _resolve_all([(call, _outcome(reply)) for call, reply in ready if call is not None])

    def _ride_out_outage(self, listen: Redis, run_id: str | None) -> str | None:
        """Wait for Redis to answer again. Calls in flight survive a blip of the same server; past the
        grace period, or when another server (a restart lost the streams) answers, they fail at once."""
        while not self._closed:
            now_id = server_after_outage(listen, time.monotonic() + _OUTAGE_GRACE, lambda: self._closed)
            if self._closed or (now_id is not None and now_id == run_id):
                return run_id
            what = "restarted" if now_id is not None else "unreachable"
            self._fail_admitted(RedisUnavailable, f"Redis at {redacted(self.url)} {what} while the call waited "
                                                  "for its result; it may or may not have run")
            if now_id is not None:
                return now_id
            run_id = None  # keep polling; the next server's id is taken as it is
        return run_id

    def _fail_admitted(self, kind: type[RedisUnavailable], message: str) -> None:
        with self._lock:
            lost = [call for call in self._calls.values() if call.entry_id is not None]
            for call in lost:
                del self._calls[call.request_id]
        _resolve_all([(call, kind(message)) for call in lost])

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        try:
            self._redis.rpush(self.reply_key, b"")  # wakes the listener from its BLPOP now
        except OUTAGE:
            pass
        self._sender.join(5)
        self._listener.join(_BLOCK + 2 * CONNECT_TIMEOUT + 1)
        self._send_channel.close()
        if not self._direct_busy:  # else its caller is still reading it (close(drain=False) woke it)
            self._direct_channel.close()
        self._redis.close()


def _outcome(reply: list[Any]) -> Outcome:
    """A reply from :func:`~microbatch.remote._wire.decode_replies` as its caller's outcome."""
    _, payload, error, *failed = reply
    if error is not None:
        return decode_error(*error)
    if failed:  # a map with return_exceptions, some of its items failed
        return Mixed(payload or b"", {int(index): decode_error(*item_error) for index, item_error in failed[0]})
    return payload or b""


def _resolve_all(outcomes: list[tuple[Call, Outcome]]) -> None:
    """Hand each caller its outcome (as the value: the caller counts it, then raises an error);
    callers on one event loop are woken by one callback."""
    send([(call.waiter, outcome, None) for call, outcome in outcomes])


# ---------------------------------------------------------------- one link per process and URL

_links: dict[str, Link] = {}
_links_lock = threading.Lock()


def acquire(url: str) -> Link:
    """The process's link to ``url``, created on first use; :func:`release` it when done."""
    with _links_lock:
        link = _links.get(url)
        if link is None or link._closed:
            link = _links[url] = Link(url)
        link._users += 1
        return link


def release(link: Link) -> None:
    """Give back a link from :func:`acquire`; the last user's release stops its threads."""
    with _links_lock:
        link._users -= 1
        if link._users > 0:
            return
        if _links.get(link.url) is link:
            del _links[link.url]
    link.close()


#: Forks survived by this process: a batcher whose link was made in an earlier generation makes a new one.
generation = 0


def _after_fork_in_child() -> None:
    # The parent's threads do not exist in a forked child: its batchers get fresh links on next use.
    global _links_lock, generation
    _links.clear()
    _links_lock = threading.Lock()
    generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

