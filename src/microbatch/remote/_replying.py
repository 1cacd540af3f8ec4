"""The host's replies: finished calls collected from the batcher's worker, sent back in one FINISH call."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import NoScriptError

from ._entries import Call
from ._redis import OUTAGE
from ._state import HostState, Result
from ._wire import FINISH, GROUP, REPLY_TTL_MS, Reply, Script, encode_error, encode_replies

__all__ = ["Replying"]

logger = logging.getLogger("microbatch.remote")

_MAX_BACKOFF = 1.0

class Replying(HostState):
    """The :class:`~microbatch.remote.Host`'s flusher side (a mixin: the state is the host's)."""

    __slots__ = ()

    def _done(self, call: Call, results: Any, error: BaseException | None) -> None:
        """A call's outcome, from the batcher's worker (maybe under the batcher's lock: no calls back into it)."""
        if self._abort.is_set():
            return  # after a forced stop nothing is acknowledged: another host reruns the entry
        self._outcomes.append((call, results, error))
        if error is None and call.held == self._held:
            # The only call held (a lone caller): reply from this thread, sparing a hand-off to the flusher.
            # Results arrive after the batcher released its lock; with others held the flusher batches.
            replies, acks, parked = self._settle()
            if acks or replies:
                self._send_finish(self._finish_args(acks, replies), retry=False)
            if parked:
                with self._lock:
                    self._parked[0:0] = parked
        if self._carrying:
            with self._lock:  # the reader clears the flag as it takes the calls, under this lock
                carrying = self._carrying
            if carrying:  # it takes this one too: no need to wake the flusher
                self._ready.set()
                return
        self._wake.set()

    # ------------------------------------------------------------------ replying

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(None)
            if self._carrying and not (self._closing or self._unsent):
                # The reader takes them within moments and replies with its next read. (A call that
                # finishes after that take rings this alarm after the flag was cleared: none is left behind.)
                continue
            replies, acks, parked = self._settle()
            if parked:
                self._resubmit(parked)
            with self._lock:
                unsent, self._unsent = self._unsent, []
            if acks or replies:
                unsent.append(self._finish_args(acks, replies))
            for args in unsent:
                self._send_finish(args, retry=True)
            if self._abort.is_set() or (self._closing and not (self._outcomes or self._acks or self._unsent)):
                return

    def _resubmit(self, parked: list[Call]) -> None:
        """Room was freed: submit the parked calls again (those still without room stay parked, in order)."""
        live: list[Call] = []
        for call in parked:
            if call.dropped:
                with self._lock:
                    self._cancelled_unrun += call.size
                self._done(call, None, asyncio.CancelledError())
            else:
                live.append(call)
        still = self._submit(live)
        if still:
            with self._lock:  # before calls parked meanwhile
                self._parked[0:0] = still

    def _settle(self, carrying: bool = False) -> tuple[dict[str, list[Result]], list[tuple[bytes, int]], list[Call]]:
        """Take the finished calls: their replies by reply key, the entries now done, and (room having been
        freed) the parked calls to submit again. ``carrying``: the reader takes them (and ends its wait)."""
        replies: dict[str, list[Result]] = {}
        with self._lock:
            if carrying:
                self._carrying = False
            outcomes = self._outcomes
            taken = []
            while outcomes:  # appended by the worker without the lock; taken only under it
                taken.append(outcomes.popleft())
            acks, self._acks = self._acks, []
            entries = self._entries
            for call, results, error in taken:
                entry = call.entry
                calls = entry.calls
                if calls.pop(call.request_id, None) is None:
                    continue  # settled already (each call has one outcome: this is only a safeguard)
                call.cancel = None  # it leads back here through the batcher's request: leave no cycle to collect
                self._held -= call.held
                if not isinstance(error, asyncio.CancelledError):  # a cancelled call's caller is gone
                    replies.setdefault(entry.reply_to, []).append(
                        (call.request_id, results, error, call.return_exceptions)
                    )
                if not calls:
                    del entries[entry.id]
                    acks.append((entry.id, entry.size))
            parked: list[Call] = []
            if taken:
                parked, self._parked = self._parked, []
        if taken:
            self._room.set()
        return replies, acks, parked

    def _finish_args(self, acks: list[tuple[bytes, int]], replies: dict[str, list[Result]]) -> list[Any]:
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
                    self._unsend(args)
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

    def _unsend(self, args: list[Any]) -> None:
        """FINISH arguments another thread could not send: the flusher sends them (and retries)."""
        with self._lock:
            self._unsent.append(args)
        self._wake.set()

    def _reply(self, outcome: Result) -> Reply:
        request_id, results, error, return_exceptions = outcome
        if error is None:
            try:
                failed = [(i, encode_error(r)) for i, r in enumerate(results)
                          if isinstance(r, BaseException)] if return_exceptions else None
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
