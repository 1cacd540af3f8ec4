"""The host's replies: finished calls collected from the batcher's worker, sent back in one FINISH call."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import NoScriptError

from ._entries import Entry
from ._redis import OUTAGE
from ._state import HostState, Parked
from ._wire import FINISH, GROUP, REPLY_TTL_MS, Reply, Script, encode_error, encode_replies

__all__ = ["Replying"]

logger = logging.getLogger("microbatch.remote")

_MAX_BACKOFF = 1.0

#: One reply before encoding: (request id, results or None, error or None).
_Result = tuple[int, Any, BaseException | None]


class Replying(HostState):
    """The :class:`~microbatch.remote.Host`'s flusher side (a mixin: the state is the host's)."""

    __slots__ = ()

    def _done(self, entry: Entry, request_id: int, held: int, results: Any, error: BaseException | None) -> None:
        """A call's outcome, from the batcher's worker (maybe under the batcher's lock: no calls back into it)."""
        if self._abort.is_set():
            return  # after a forced stop nothing is acknowledged: another host reruns the entry
        self._outcomes.append((entry, request_id, held, results, error))
        if error is None and held == self._held:
            # The only call held (a lone caller): reply from this thread, sparing a hand-off to the flusher.
            # Results arrive after the batcher released its lock; with others held the flusher batches.
            replies, acks, parked = self._settle()
            if acks or replies:
                self._send_finish(self._finish_args(acks, replies), retry=False)
            if parked:
                with self._lock:
                    self._parked[0:0] = parked
        self._wake.set()

    # ------------------------------------------------------------------ replying

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(None)
            replies, acks, parked = self._settle()
            for index, (entry, header, items, deadline) in enumerate(parked):
                if header.request_id in entry.dropped:
                    with self._lock:
                        self._cancelled_unrun += header.size
                    self._done(entry, header.request_id, header.size, None, asyncio.CancelledError())
                elif not self._submit(entry, header, items, deadline):
                    with self._lock:  # still no room: the rest stay parked, in order, before later ones
                        self._parked[0:0] = parked[index:]
                    break
            with self._lock:
                unsent, self._unsent = self._unsent, []
            if acks or replies:
                unsent.append(self._finish_args(acks, replies))
            for args in unsent:
                self._send_finish(args, retry=True)
            if self._abort.is_set() or (self._closing and not (self._outcomes or self._acks or self._unsent)):
                return

    def _settle(self) -> tuple[dict[str, list[_Result]], list[tuple[bytes, int]], list[Parked]]:
        """Take the finished calls: their replies by reply key, the entries now done, and (room having been
        freed) the parked calls to submit again."""
        outcomes = self._outcomes
        taken = []
        while outcomes:
            try:
                taken.append(outcomes.popleft())
            except IndexError:  # another thread took the last one
                break
        replies: dict[str, list[_Result]] = {}
        with self._lock:
            acks, self._acks = self._acks, []
            for entry, request_id, held, results, error in taken:
                self._held -= held
                entry.cancels.pop(request_id, None)
                if not isinstance(error, asyncio.CancelledError):  # a cancelled call's caller is gone
                    replies.setdefault(entry.reply_to, []).append((request_id, results, error))
                entry.left -= 1
                if entry.left == 0:
                    del self._entries[entry.id]
                    acks.append((entry.id, entry.size))
            parked: list[Parked] = []
            if taken:
                parked, self._parked = self._parked, []
        if taken:
            self._room.set()
        return replies, acks, parked

    def _finish_args(self, acks: list[tuple[bytes, int]], replies: dict[str, list[_Result]]) -> list[Any]:
        """The FINISH script's arguments: the entries to acknowledge, then one blob of replies per client."""
        args: list[Any] = [GROUP, REPLY_TTL_MS, len(acks)]
        for entry_id, size in acks:
            args += (entry_id, size)
        for key, outcomes in replies.items():
            args += (key, encode_replies([self._reply(outcome) for outcome in outcomes]))
        return args

    def _send_finish(self, args: list[Any], *, retry: bool) -> None:
        """Send replies and acknowledgements in one FINISH call. With ``retry``, keep trying while Redis is
        briefly away; without, hand them to the flusher on the first failure."""
        backoff = 0.05
        while True:
            try:
                self._eval(FINISH, [self.keys.requests, self.keys.waiting], args)
                return
            except Exception as exc:
                if not retry:
                    with self._lock:
                        self._unsent.append(args)
                    return
                if not isinstance(exc, OUTAGE):
                    logger.exception("microbatch host %s: FINISH failed; its entries will be claimed again",
                                     self.consumer)
                    return
                self._went_down(exc)
                if self._abort.is_set() or (self._down_since is not None
                                            and time.monotonic() - self._down_since > 2 * self.claim_idle):
                    # The callers have failed by now (their link saw the outage): drop, another host may rerun.
                    logger.warning("microbatch host %s: dropped replies and acknowledgements while Redis was down",
                                   self.consumer)
                    return
                self._abort.wait(backoff)  # pacing reconnection attempts, not synchronisation
                backoff = min(_MAX_BACKOFF, backoff * 2)

    def _reply(self, outcome: _Result) -> Reply:
        request_id, results, error = outcome
        if error is None:
            try:
                failed = [(i, encode_error(r)) for i, r in enumerate(results) if isinstance(r, BaseException)]
                if failed:  # a map with return_exceptions: its errors travel beside the other results
                    cleared = list(results)
                    for i, _ in failed:
                        cleared[i] = None
                    return request_id, self.codec.encode(cleared), None, failed
                return request_id, self.codec.encode(results), None
            except Exception as exc:  # TypeError: a result the codec cannot carry
                error = exc
        return request_id, None, encode_error(error)

    def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._redis.script_load(script.source)
            return self._redis.evalsha(script.sha, len(keys), *keys, *args)
