"""The request queue: the priority heap of queued requests, lazy removal, and the counts of what waits.

Queued requests sit in a min-heap keyed ``(virtual arrival, sequence)``. A small request's key is its
arrival; a large request's is its arrival plus the aging delay, so small requests go first, equals
are FIFO, and a large request is never overtaken by a small one that arrived more than the aging
delay after it. Resolved requests are dropped lazily when they reach the top. Which items the next
batch takes is :mod:`._forming`'s rule; the queue returns what it took and what expired, and never
resolves a request itself.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from typing import cast

from ._cost import CostModel
from ._forming import SMALL_RIDE, Entry, take_by_length, take_in_order
from ._groups import GroupCosts
from ._request import Request, Slice, as_items, measure, padded_tokens

# The request's own names are re-exported: the batcher, the worker and a batch's run import them from here.
__all__ = ["Request", "RequestQueue", "Slice", "Taken", "as_items", "measure", "padded_tokens"]

# What taking a batch returns: the batch, the requests found past their deadline, real and padded tokens.
Taken = tuple[list[Slice], list[Request], int, int]


class RequestQueue:
    """The heap of queued requests and the rules that form the next batch from it. Callers hold the lock.

    ``depth`` counts queued, not yet dispatched items of unresolved requests; ``tokens`` their lengths
    (length-aware batchers), so that a queue already holding a token budget's worth is sent without waiting.
    """

    __slots__ = (
        "_heap", "_seq", "depth", "tokens", "max_batch_size", "small_request_size", "_small_ride", "max_batch_tokens",
        "group_by_length", "length_aware", "_token_cost", "_group_costs",
    )

    def __init__(
        self, max_batch_size: int, small_request_size: int, max_batch_tokens: int | None, group_by_length: bool,
        length_aware: bool, token_cost: CostModel, group_costs: GroupCosts | None = None,
    ) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()
        self.depth = 0
        self.tokens = 0
        self.max_batch_size = max_batch_size
        self.small_request_size = small_request_size
        self._small_ride = max(1, math.ceil(SMALL_RIDE * max_batch_size))
        self.max_batch_tokens = max_batch_tokens
        self.group_by_length = group_by_length
        self.length_aware = length_aware
        self._token_cost = token_cost  # run time against padded tokens, measured by the batcher
        self._group_costs = group_costs  # the same per group key, when requests carry keys

    def __repr__(self) -> str:
        return f"<RequestQueue depth={self.depth} entries={len(self._heap)}>"

    def push(self, request: Request, key: float) -> None:
        heapq.heappush(self._heap, (key, next(self._seq), request))
        self.depth += request.size
        if request.tokens is not None:
            self.tokens += sum(request.tokens)

    def discard(self, request: Request) -> None:
        """Forget ``request``'s undispatched items (it was resolved); its heap entry goes lazily."""
        self.depth -= request.size - request.cursor
        if request.tokens is not None:
            self.tokens -= sum(request.tokens[request.cursor:])
        request.cursor = request.size

    def clear(self) -> None:
        """Drop the heap's entries once ``depth`` is 0: only resolved requests can be left."""
        self._heap.clear()
        self.tokens = 0

    def drain(self) -> list[Request]:
        """Every queued request, removed from the heap, for the caller to resolve."""
        requests = [entry[2] for entry in self._heap if not entry[2].done]
        self._heap.clear()
        return requests

    def budget_full(self) -> bool:
        """The queued items hold at least one batch's token budget: waiting for company cannot grow the batch."""
        return self.max_batch_tokens is not None and self.tokens >= self.max_batch_tokens

    def oldest_arrival(self, default: float) -> float:
        return min((r.arrival for _, _, r in self._heap if not r.done), default=default)

    def next_key(self) -> Hashable:
        """The group key of the item that anchors the next batch (None without group keys or when empty)."""
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)  # lazy removal, as forming would do
        if not heap or heap[0][2].keys is None:
            return None
        request = heap[0][2]
        return cast("list[Hashable]", request.keys)[request.cursor]

    def take(self, now: float) -> Taken:
        """Form the next batch; may be empty when everything at the top was resolved or expired."""
        expired: list[Request] = []
        if self.length_aware:
            batch, items, real, padded = take_by_length(
                self._heap, now, expired, self.max_batch_size, self.max_batch_tokens, self.group_by_length,
                self._token_cost, self._group_costs,
            )
        else:
            batch, items, real, padded = take_in_order(
                self._heap, now, expired, self.max_batch_size, self.small_request_size, self._small_ride
            )
        self.depth -= items
        self.tokens -= real
        return batch, expired, real, padded
