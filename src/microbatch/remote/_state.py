"""What a model host holds, shared by its parts (reading, replying, liveness): the attributes, declared once."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from redis import Redis

from .. import Batcher
from ._calls import Alarm
from ._codec import Codec
from ._entries import Call, EarlyCancels, Entry
from ._wire import Keys

__all__ = ["HostState", "Outcome", "Result"]

#: A finished call, until its reply is taken: (call, results, error).
Outcome = tuple[Call, Any, BaseException | None]
#: One reply before encoding: (request id, results or None, error or None, whether items may hold errors).
Result = tuple[int, Any, BaseException | None, bool]


class HostState:
    """The slots of :class:`~microbatch.remote.Host`, whose ``__init__`` sets them all; its parts
    (:class:`~microbatch.remote._reading.Reading`, :class:`~microbatch.remote._replying.Replying`,
    :class:`~microbatch.remote._liveness.Liveness`) are mixins over this state."""

    __slots__ = ("batcher", "url", "keys", "codec", "prefetch", "claim_idle", "report_interval", "consumer",
                 "_lock", "_room", "_wake", "_ready", "_carrying", "_run_p50", "_stopping", "_abort", "_finished",
                 "_redis", "_reader", "_entries",
                 "_held", "_acks", "_outcomes", "_unsent", "_parked", "_early", "_mean_entry", "_offset",
                 "_group_ready", "_down_since", "_expired_unrun", "_cancelled_unrun", "_claimed", "_closing",
                 "_stop_requests")

    batcher: Batcher[Any, Any]
    url: str
    keys: Keys
    codec: Codec
    prefetch: int
    claim_idle: float
    report_interval: float
    consumer: str
    _lock: threading.Lock  # guards the entries, the counts and the lists below
    _room: Alarm  # rung when finished calls are taken (room freed): the reader may read again
    _wake: Alarm  # rung when a call finishes: the flusher sends its reply
    _ready: Alarm  # rung when a call finishes while the reader waits to carry the replies
    _carrying: bool  # the reader is about to take the finished calls (and send them with its read)
    _run_p50: float  # the batch function's run time p50 in seconds, by the last heartbeat (inf before any)
    _stopping: threading.Event
    _abort: threading.Event
    _finished: threading.Event  # set once run() is done with the helpers
    _redis: Redis
    _reader: Redis
    _entries: dict[bytes, Entry]  # held, by stream id
    _held: int  # items of submitted calls not finished yet
    _acks: list[tuple[bytes, int]]  # entries settled without running, not yet acknowledged
    _outcomes: deque[Outcome]  # finished calls: appended by the worker without a lock, taken under it
    _unsent: list[list[Any]]  # FINISH arguments a failed direct or carried reply left for the flusher
    _parked: list[Call]  # calls waiting for room in the batcher, in order
    _early: EarlyCancels
    _mean_entry: float  # items per entry, recently: how many entries fill the room
    _offset: float  # Redis's clock minus ours, seconds
    _group_ready: bool
    _down_since: float | None
    _expired_unrun: int
    _cancelled_unrun: int
    _claimed: int
    _closing: bool  # the flusher sends what is left and exits
    _stop_requests: int  # stop() calls and signals; turned into _stopping/_abort by run()'s thread

    # Implemented by Reading; declared here for the other parts.
    def _submit(self, calls: list[Call]) -> list[Call]:
        raise NotImplementedError

    def _went_down(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _accept_safely(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        raise NotImplementedError

    # Implemented by Replying; declared here for the other parts.
    def _done(self, call: Call, results: Any, error: BaseException | None) -> None:
        raise NotImplementedError

    def _settle(self, carrying: bool = False) -> tuple[dict[str, list[Result]], list[tuple[bytes, int]], list[Call]]:
        raise NotImplementedError

    def _resubmit(self, parked: list[Call]) -> None:
        raise NotImplementedError

    def _finish_args(self, acks: list[tuple[bytes, int]], replies: dict[str, list[Result]]) -> list[Any]:
        raise NotImplementedError

    def _unsend(self, args: list[Any]) -> None:
        raise NotImplementedError
