"""The collation protocol: how a batch of per-request items becomes one model input and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Collate"]


@runtime_checkable
class Collate(Protocol):
    """Turns a list of per-request items into one batch input, and the batch output into per-item results.

    Pass one to ``Batcher(fn, collate=...)``: the worker then calls
    ``collate.split(fn(collate.collate(items)), items)``. An error raised by ``collate`` or ``split``
    counts as the batch function's error, so ``on_error="isolate"`` still finds the one bad item.
    """

    def size(self, item: Any) -> int:
        """The item's length in tokens (its padded-length contribution). Called once, at submission,
        on the caller's thread: raise ``ValueError``/``TypeError`` here to reject a malformed item."""
        ...

    def collate(self, items: list[Any]) -> Any:
        """The batch input for ``fn`` (for example padded, stacked tensors)."""
        ...

    def split(self, output: Any, items: list[Any]) -> Sequence[Any]:
        """One result per item, in order, from ``fn``'s output (for example un-padded rows)."""
        ...
