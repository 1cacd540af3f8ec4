"""A queued request: one call (a single item) or one map (many items), and the runs of it a batch carries.

A request is the unit of priority and of resolution: it is queued whole, its items go out in order
in one or more batches (each batch carries a :data:`Slice` of it), and it is resolved once every
item has an output or it fails. :func:`as_items` and :func:`measure` check a call's items before
anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, cast

from ._errors import ItemTooLarge
from ._waiters import Waiter

__all__ = ["Request", "Slice", "as_items", "measure", "padded_tokens"]


class Request:
    """One call (a single item) or one map (many items); the unit of priority and of resolution."""

    __slots__ = (
        "items", "single", "size", "cursor", "pending", "results", "deadline", "arrival", "waiter", "done", "tokens",
        "keys", "return_exceptions", "failed",
    )

    def __init__(
        self, items: list[Any], single: bool, deadline: float | None, arrival: float, waiter: Waiter,
        tokens: list[int] | None, keys: list[Hashable] | None = None,
    ) -> None:
        self.items = items
        self.tokens = tokens  # each item's length, when the batcher is length-aware
        self.keys = keys  # each item's group key, when the batcher has group_by
        self.single = single
        self.size = len(items)
        self.cursor = 0  # items before it have been dispatched
        self.pending = self.size  # items without an output yet
        self.results: list[Any] | None = None if single else [None] * self.size
        self.deadline = deadline
        self.arrival = arrival
        self.waiter = waiter
        self.done = False
        self.return_exceptions = False  # a map that takes its items' errors in place of their results
        self.failed = 0  # items of such a map whose result is an error

    def fill(self, start: int, stop: int, values: list[Any], offset: int) -> bool:
        """Store a map's outputs for items ``start:stop``; True once every item has one."""
        cast("list[Any]", self.results)[start:stop] = values[offset:offset + stop - start]
        self.pending -= stop - start
        return self.pending == 0


# A run of one request's items inside a batch: (request, start, stop).
Slice = tuple[Request, int, int]


def as_items(items: Iterable[Any], method: str) -> list[Any]:
    """The items of a map, refusing a string (which would otherwise be split into one item per character)."""
    if isinstance(items, (str, bytes, bytearray)):
        word = "text" if isinstance(items, str) else "blob"
        raise TypeError(
            f"{method}() takes an iterable of items and would split this {type(items).__name__} into one item per "
            f"character: pass [{word}] to run it as one item, or {method}(list_of_{word}s) for many"
        )
    return list(items)


def measure(size_of: Callable[[Any], int], items: list[Any], budget: int | None, name: str) -> list[int]:
    """Each item's length, checked against the token budget before anything is queued."""
    tokens = [size_of(item) for item in items]
    for index, length in enumerate(tokens):
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise TypeError(f"the size of item {index} must be an int >= 0, got {length!r}")
        if budget is not None and length > budget:
            where = "the item" if len(items) == 1 else f"item {index}"
            raise ItemTooLarge(
                f"{where} has {length} tokens, more than batcher {name!r}'s max_batch_tokens={budget}; "
                "truncate it or raise max_batch_tokens"
            )
    return tokens


def padded_tokens(part: list[Slice]) -> int:
    """The tokens a batch of ``part`` runs once padded: its longest item's length times its items."""
    lengths = [t for request, start, stop in part for t in cast("list[int]", request.tokens)[start:stop]]
    return max(lengths) * len(lengths)
