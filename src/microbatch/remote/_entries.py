"""What a host holds: the stream entries it read, their calls, and the cancellations it heard of early."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ._wire import REPLY_FIELD, Header

__all__ = ["Entry", "EarlyCancels", "parse_entry"]


class Entry:
    """One stream entry a host holds, from its read until every call in it is done (then it is acknowledged).

    ``size`` is every item the entry carries (the ``waiting`` counter goes down by it when the entry is
    deleted); ``left`` counts its calls not done yet; ``cancels`` holds each submitted call's cancel
    function, ``dropped`` the calls whose caller gave up before they were submitted.
    """

    __slots__ = ("id", "reply_to", "size", "left", "cancels", "dropped")

    def __init__(self, entry_id: bytes, reply_to: str, size: int, left: int) -> None:
        self.id = entry_id
        self.reply_to = reply_to
        self.size = size
        self.left = left
        self.cancels: dict[int, Callable[[], None]] = {}
        self.dropped: set[int] = set()

    def __repr__(self) -> str:
        return f"<Entry {self.id!r} items={self.size} calls_left={self.left}>"


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, list[tuple[Header, bytes]]]:
    """An entry's reply key and its calls (header, payload); ValueError (or msgpack's errors) if malformed."""
    reply_to = fields.get(REPLY_FIELD)
    if reply_to is None:
        raise ValueError("the entry has no reply key")
    calls = [(Header.unpack(name), payload) for name, payload in fields.items() if name != REPLY_FIELD]
    if not calls:
        raise ValueError("the entry holds no call")
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

    def pop(self, entry_id: bytes) -> set[int]:
        return self._by_entry.pop(entry_id, None) or set()

    def __len__(self) -> int:
        return len(self._by_entry)

    def __repr__(self) -> str:
        return f"<EarlyCancels entries={len(self._by_entry)}>"
