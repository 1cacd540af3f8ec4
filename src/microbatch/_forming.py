"""Batch forming: which queued items the next batch takes, in priority order or by length, of one group key.

Forming takes items off the top of the request heap (see :mod:`._queue`) and only moves them: it
advances each request's cursor over the items it takes, sets aside the requests it finds past their
deadline, and never resolves a request itself. The queue keeps its counts from what it returns.

- **In priority order**, a batch that carries small requests is topped up with large-request items
  only to ``SMALL_RIDE`` of ``max_batch_size`` (the 3/4 ride).
- **Length-aware** (a token budget, or grouping by length), a batch holds at most
  ``max_batch_tokens`` padded tokens and, with ``group_by_length``, items of similar lengths.
- **With group keys** (``group_by``), the top-priority request's next item anchors the batch and
  sets its key; forming then looks down the heap for items of that key only (the others stay queued,
  in their places), so no batch mixes keys, priority and aging across groups are the heap's, and no
  group starves: every request reaches the top in turn and then anchors a batch of its own group.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import cast

from ._cost import CostModel
from ._groups import GroupCosts, same_key
from ._request import Request, Slice

__all__ = ["SMALL_RIDE", "Entry", "Formed", "take_by_length", "take_in_order"]

SMALL_RIDE = 0.75  # the share of max_batch_size a batch carrying small requests fills with large ones
_WINDOW_BATCHES = 4  # length-aware forming looks this many batches' worth of items down the heap
# Grouped forming passes over at most this many batches' worth of other groups' items looking for
# the anchor's: enough for full batches with many interleaved groups, bounded so forming stays cheap.
_GROUP_SCAN_BATCHES = 16

# A heap entry: (virtual arrival, sequence, request).
Entry = tuple[float, int, Request]
# What forming returns: the batch, the items it took, and its real and padded tokens (0 unless length-aware).
Formed = tuple[list[Slice], int, int, int]


def take_in_order(
    heap: list[Entry], now: float, expired: list[Request], max_batch_size: int, small_request_size: int,
    small_ride: int,
) -> Formed:
    """Take the next batch in priority order.

    A batch that carries small requests is topped up with large-request items only to
    ``small_ride`` items (``SMALL_RIDE`` of ``max_batch_size``): small requests then ride a shorter
    batch (about 3/4 of a full one's run time for most models) at a cost of a few percent of bulk
    throughput.
    """
    space = max_batch_size
    taken = 0
    batch: list[Slice] = []
    carries_small = False
    anchor: Hashable = None
    deferred: list[Entry] = []  # other groups' entries, put back once formed
    scan = _GROUP_SCAN_BATCHES * max_batch_size
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
        if request.size <= small_request_size:
            carries_small = True
        elif carries_small:
            space = min(space, small_ride - (max_batch_size - space))
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
        space -= stop - start
        taken += stop - start
        batch.append((request, start, stop))
    for entry in deferred:
        heapq.heappush(heap, entry)
    return batch, taken, 0, 0


def take_by_length(
    heap: list[Entry], now: float, expired: list[Request], max_batch_size: int, max_batch_tokens: int | None,
    group_by_length: bool, token_cost: CostModel, group_costs: GroupCosts | None,
) -> Formed:
    """Form a batch under the token budget, grouping similar lengths when ``group_by_length``.

    The first request in priority order anchors the batch, so nothing starves. The rest of a
    window of requests at the top of the heap is considered in two tiers, requests already due
    (small ones, and large ones whose aging has run out) before large ones not yet due, so length
    grouping never breaks small-request priority; within a tier, lengths closest to the anchor's
    go first. A request contributes a contiguous run of its items, keeping results in order. With
    group keys, the window holds only requests whose next item has the anchor's key. ``token_cost``
    is the run time against padded tokens, ``group_costs`` the same per group key.
    """
    window: list[Entry] = []
    deferred: list[Entry] = []
    group: Hashable = None  # the anchor's key
    seen = 0
    scan = _GROUP_SCAN_BATCHES * max_batch_size
    while heap and seen < _WINDOW_BATCHES * max_batch_size:
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
        return [], 0, 0, 0
    order = window
    if group_by_length and len(window) > 1:
        anchor = _next_tokens(window[0][2])
        order = [window[0], *sorted(window[1:], key=lambda e: (e[0] > now, abs(_next_tokens(e[2]) - anchor)))]
    # Pick items in that order under the budget, noting each prefix's real and padded tokens.
    budget = max_batch_tokens
    picks: list[tuple[Request, int]] = []
    reals: list[int] = []
    longests: list[int] = []
    longest = real = 0
    for _, _, request in order:
        tokens = cast("list[int]", request.tokens)  # every request of a length-aware batcher is measured
        keys = request.keys
        index = request.cursor
        end = request.size if keys is None else _run_end(keys, index, request.size, group)
        while index < end and len(picks) < max_batch_size:
            grown = max(longest, tokens[index])
            if budget is not None and grown * (len(picks) + 1) > budget:
                break
            longest, real = grown, real + tokens[index]
            picks.append((request, index))
            reals.append(real)
            longests.append(longest)
            index += 1
        if len(picks) == max_batch_size or (index == request.cursor and not group_by_length):
            break  # full, or FIFO forming stops at the first item that does not fit
    count = len(picks)
    cost = token_cost
    if group_costs is not None and window[0][2].keys is not None:
        cost = group_costs.token_cost(group) or cost
    a, b = cost.fixed, cost.per_item
    if group_by_length and a is not None and b is not None and count > 1:
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
    for request, _, stop in batch:
        request.cursor = stop
    for entry in window:
        if entry[2].cursor < entry[2].size:
            heapq.heappush(heap, entry)
    if not count:
        return batch, 0, 0, 0
    return batch, count, reals[count - 1], longests[count - 1] * count


def _next_tokens(request: Request) -> int:
    return cast("list[int]", request.tokens)[request.cursor]


def _run_end(keys: list[Hashable], start: int, stop: int, anchor: Hashable) -> int:
    """The end of the run of items from ``start`` (before ``stop``) whose key is the anchor's."""
    index = start
    while index < stop and same_key(keys[index], anchor):
        index += 1
    return index
