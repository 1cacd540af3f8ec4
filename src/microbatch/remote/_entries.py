"""What a host holds: the stream entries it read, their calls, and the cancellations it heard of early."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._wire import REPLY_FIELD, Header

__all__ = ["Call", "EarlyCancels", "Entry", "parse_entry"]


class Entry:
    """One stream entry a host holds, from its read until every call in it is done (then it is acknowledged).

    ``size`` is every item the entry carries (the ``waiting`` counter goes down by it when the entry is
    deleted); ``calls`` holds its calls not done yet, by request id.
    """

    __slots__ = ("id", "reply_to", "size", "calls")

    def __init__(self, entry_id: bytes, reply_to: str, size: int) -> None:
        self.id = entry_id
        self.reply_to = reply_to
        self.size = size
        self.calls: dict[int, Call] = {}

    def __repr__(self) -> str:
        return f"<Entry {self.id!r} items={self.size} calls_left={len(self.calls)}>"


class Call:
    """One call of an entry, from its read until its outcome is taken for the reply.

    ``held`` is the items it counts in the host's room (0 for a call settled without running);
    ``items`` and ``deadline`` (``time.monotonic()``, or None) serve until it is submitted; ``cancel`` is
    the batcher's cancel function once it is; ``dropped`` marks a call whose caller gave up before that.
    ``return_exceptions``: a map whose failed items take their errors in their places.
    """

    __slots__ = ("entry", "request_id", "size", "return_exceptions", "held", "items", "deadline", "cancel",
                 "dropped")

    def __init__(self, entry: Entry, request_id: int, size: int, return_exceptions: bool = False) -> None:
        self.entry = entry
        self.request_id = request_id
        self.size = size
        self.return_exceptions = return_exceptions
        self.held = 0
        self.items: list[Any] | None = None
        self.deadline: float | None = None
        self.cancel: Callable[[], None] | None = None
        self.dropped = False

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else "submitted" if self.cancel is not None else "read"
        return f"<Call {self.request_id} of {self.entry.id!r} items={self.size} {state}>"


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, list[tuple[Header, bytes]]]:
    """An entry's reply key and its calls (header, payload); ValueError (or msgpack's errors) if malformed."""
    reply_to = fields.get(REPLY_FIELD)
    if reply_to is None:
        raise ValueError("the entry has no reply key")
    unpack = Header.unpack
    calls = [(unpack(name), payload) for name, payload in fields.items() if name != REPLY_FIELD]
    if not calls:
        raise ValueError("the entry holds no call")
    if len({header.request_id for header, _ in calls}) != len(calls):
        raise ValueError("the entry holds two calls with the same request id")
    return reply_to.decode(), calls


class EarlyCancels:
    """Cancellations heard for entries this host does not hold (yet): if it reads one later, those calls
    are dropped unrun. Bounded: the oldest are forgotten first (cancelling is best effort)."""

    __slots__ = ("_by_entry", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self._by_entry: OrderedDict[bytes, set[int]] = OrderedDict()
        self.limit = limit

    def add(self, entry_id: bytes, request_id: int) -> None:
        self._by_entry.setdefault(entry_id, set()).add(request_id)
        if len(self._by_entry) > self.limit:
            self._by_entry.popitem(last=False)

    def pop(self, entry_id: bytes) -> set[int] | None:
        return self._by_entry.pop(entry_id, None) if self._by_entry else None

    def __len__(self) -> int:
        return len(self._by_entry)

    def __repr__(self) -> str:
        return f"<EarlyCancels entries={len(self._by_entry)}>"
