"""The request queue and batch forming: the priority heap, lazy removal, the 3/4 ride, length-aware forming,
batches of one group key.

Queued requests sit in a min-heap keyed ``(virtual arrival, sequence)``. A small request's key is its
arrival; a large request's is its arrival plus the aging delay, so small requests go first, equals
are FIFO, and a large request is never overtaken by a small one that arrived more than the aging
delay after it. Resolved requests are dropped lazily when they reach the top. Forming a batch only
moves items: it returns what it took and what it found expired, and never resolves a request itself.

With group keys (``group_by``), the top-priority request's next item anchors the batch and sets its
key; forming then looks down the heap for items of that key only (the others stay queued, in their
places), so no batch mixes keys, priority and aging across groups are the heap's, and no group
starves: every request reaches the top in turn and then anchors a batch of its own group.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any, cast

from ._errors import ItemTooLarge
from ._groups import GroupCosts, same_key
from ._policy import CostModel
from ._waiters import Waiter

__all__ = ["SMALL_RIDE", "Request", "RequestQueue", "Slice", "Taken", "as_items", "measure", "padded_tokens"]

SMALL_RIDE = 0.75  # the share of max_batch_size a batch carrying small requests fills with large ones
_WINDOW_BATCHES = 4  # length-aware forming looks this many batches' worth of items down the heap
# Grouped forming passes over at most this many batches' worth of other groups' items looking for
# the anchor's: enough for full batches with many interleaved groups, bounded so forming stays cheap.
_GROUP_SCAN_BATCHES = 16


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
# What forming returns: the batch, the requests found past their deadline, real and padded tokens.
Taken = tuple[list[Slice], list[Request], int, int]


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
        self._heap: list[tuple[float, int, Request]] = []
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
            return self._take_by_length(now, expired)
        return self._take(now, expired), expired, 0, 0

    def _take(self, now: float, expired: list[Request]) -> list[Slice]:
        """Take the next batch in priority order.

        A batch that carries small requests is topped up with large-request items only to
        ``SMALL_RIDE`` of ``max_batch_size``: small requests then ride a shorter batch (about 3/4 of
        a full one's run time for most models) at a cost of a few percent of bulk throughput.
        """
        heap = self._heap
        space = self.max_batch_size
        batch: list[Slice] = []
        carries_small = False
        anchor: Hashable = None
        deferred: list[tuple[float, int, Request]] = []  # other groups' entries, put back once formed
        scan = _GROUP_SCAN_BATCHES * self.max_batch_size
        while space and heap:
            request = heap[0][2]
            if request.done or (request.deadline is not None and now >= request.deadline):
                heapq.heappop(heap)  # lazy removal of resolved requests; expired ones go back to be resolved
                if not request.done:
                    expired.append(request)
                continue
            keys = request.keys
            if keys is not None:
                if not batch:
                    anchor = keys[request.cursor]
                elif not same_key(keys[request.cursor], anchor):
                    scan -= request.size - request.cursor
                    if scan < 0:
                        break
                    deferred.append(heapq.heappop(heap))
                    continue
            if request.size <= self.small_request_size:
                carries_small = True
            elif carries_small:
                space = min(space, self._small_ride - (self.max_batch_size - space))
                if space <= 0:
                    break
            start = request.cursor
            stop = min(request.size, start + space)
            if keys is not None:
                stop = _run_end(keys, start, stop, anchor)
            request.cursor = stop
            if stop == request.size:
                heapq.heappop(heap)
            elif stop < start + space:
                deferred.append(heapq.heappop(heap))  # its next item belongs to another group
            self.depth -= stop - start
            space -= stop - start
            batch.append((request, start, stop))
        for entry in deferred:
            heapq.heappush(heap, entry)
        return batch

    def _take_by_length(self, now: float, expired: list[Request]) -> Taken:
        """Form a batch under the token budget, grouping similar lengths when ``group_by_length``.

        The first request in priority order anchors the batch, so nothing starves. The rest of a
        window of requests at the top of the heap is considered in two tiers, requests already due
        (small ones, and large ones whose aging has run out) before large ones not yet due, so length
        grouping never breaks small-request priority; within a tier, lengths closest to the anchor's
        go first. A request contributes a contiguous run of its items, keeping results in order. With
        group keys, the window holds only requests whose next item has the anchor's key.
        """
        heap = self._heap
        window: list[tuple[float, int, Request]] = []
        deferred: list[tuple[float, int, Request]] = []
        group: Hashable = None  # the anchor's key
        seen = 0
        scan = _GROUP_SCAN_BATCHES * self.max_batch_size
        while heap and seen < _WINDOW_BATCHES * self.max_batch_size:
            entry = heapq.heappop(heap)
            request = entry[2]
            if request.done:
                continue
            if request.deadline is not None and now >= request.deadline:
                expired.append(request)
                continue
            if request.keys is not None:
                if not window:
                    group = request.keys[request.cursor]
                elif not same_key(request.keys[request.cursor], group):
                    deferred.append(entry)
                    scan -= request.size - request.cursor
                    if scan < 0:
                        break
                    continue
            window.append(entry)
            seen += request.size - request.cursor
        for entry in deferred:
            heapq.heappush(heap, entry)
        if not window:
            return [], expired, 0, 0
        order = window
        if self.group_by_length and len(window) > 1:
            anchor = _next_tokens(window[0][2])
            order = [window[0], *sorted(window[1:], key=lambda e: (e[0] > now, abs(_next_tokens(e[2]) - anchor)))]
        # Pick items in that order under the budget, noting each prefix's real and padded tokens.
        budget = self.max_batch_tokens
        picks: list[tuple[Request, int]] = []
        reals: list[int] = []
        longests: list[int] = []
        longest = real = 0
        for _, _, request in order:
            tokens = cast("list[int]", request.tokens)  # every request of a length-aware batcher is measured
            keys = request.keys
            index = request.cursor
            end = request.size if keys is None else _run_end(keys, index, request.size, group)
            while index < end and len(picks) < self.max_batch_size:
                grown = max(longest, tokens[index])
                if budget is not None and grown * (len(picks) + 1) > budget:
                    break
                longest, real = grown, real + tokens[index]
                picks.append((request, index))
                reals.append(real)
                longests.append(longest)
                index += 1
            if len(picks) == self.max_batch_size or (index == request.cursor and not self.group_by_length):
                break  # full, or FIFO forming stops at the first item that does not fit
        count = len(picks)
        cost = self._token_cost
        if self._group_costs is not None and window[0][2].keys is not None:
            cost = self._group_costs.token_cost(group) or cost
        a, b = cost.fixed, cost.per_item
        if self.group_by_length and a is not None and b is not None and count > 1:
            # Keep the prefix that runs the most real tokens per second under the measured cost
            # a + b·padded: with a large fixed cost that is the whole pick, and when padding costs
            # more than another call would, a smaller, tighter batch.
            count = max(range(1, count + 1), key=lambda k: (reals[k - 1] / (a + b * longests[k - 1] * k + 1e-12), k))
        batch: list[Slice] = []
        for request, index in picks[:count]:
            if batch and batch[-1][0] is request:
                batch[-1] = (request, batch[-1][1], index + 1)
            else:
                batch.append((request, index, index + 1))
        for request, start, stop in batch:
            request.cursor = stop
            self.depth -= stop - start
        for entry in window:
            if entry[2].cursor < entry[2].size:
                heapq.heappush(heap, entry)
        if not count:
            return batch, expired, 0, 0
        self.tokens -= reals[count - 1]
        return batch, expired, reals[count - 1], longests[count - 1] * count


def padded_tokens(part: list[Slice]) -> int:
    """The tokens a batch of ``part`` runs once padded: its longest item's length times its items."""
    lengths = [t for request, start, stop in part for t in cast("list[int]", request.tokens)[start:stop]]
    return max(lengths) * len(lengths)


def _next_tokens(request: Request) -> int:
    return cast("list[int]", request.tokens)[request.cursor]


def _run_end(keys: list[Hashable], start: int, stop: int, anchor: Hashable) -> int:
    """The end of the run of items from ``start`` (before ``stop``) whose key is the anchor's."""
    index = start
    while index < stop and same_key(keys[index], anchor):
        index += 1
    return index
