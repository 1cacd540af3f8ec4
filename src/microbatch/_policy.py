"""When to dispatch: the adaptive wait rule, the aging delay and the predicted wait, read off the cost model.

A batch of ``n`` items costs about ``a + b*n`` seconds: ``a`` is the fixed cost of one call (Python
overhead, kernel launches, a network round trip) and ``b`` the cost of each item. Batching pays
because it shares ``a``. When the worker is idle and fewer than ``max_batch_size`` items wait,
dispatching now costs ``a/q + b`` of worker time per item; waiting for ``λw`` more items (``λ`` the
arrival rate) costs ``(w + a)/(q + λw) + b``. Waiting is the better deal exactly when ``q < λ·a``:
when more items are expected within one fixed cost than are already queued. So the adaptive policy
waits only then, only while items keep arriving (a closed-loop burst of callers coming back), only
until as many callers have come as the last batch released (then nobody else is known to be on the
way: tasks released together come back together), and never longer than ``a`` itself, the most that
merging can save. A lone request, a quiet service, or a cheap function (tiny ``a``) never waits.

The same model sets the aging delay of large requests, predicts how long a new call would wait in
the queue (``max_queue_delay_ms`` admission) and the ``retry_after`` of a refused call. Those two
price each batch ahead at the model's estimate but never above the longest batch actually measured:
right after a first batch of one, the fit cannot tell fixed from per-item cost and would extrapolate
a full batch as ``max_batch_size`` times that batch (a 0.2 s call predicted as 6.4 s), while no
batch observed so far took longer than 0.2 s. So a prediction is never above the cost of the batches
queued, at the longest batch time seen, and it grows as larger batches are measured.
Every constant of the policy is named below, with where it comes from (the measurements' own in
:mod:`._cost`, which fits the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from ._cost import ArrivalRate, CostModel

# CostModel is the type of WaitPolicy.cost, so importers of the policy find it here too.
__all__ = ["DISPATCH_REASONS", "CostModel", "DispatchReason", "WaitPolicy"]

# Why a batch was dispatched when it was (counted in Stats.dispatch_reasons; the README explains each).
DispatchReason = Literal["full", "idle", "wait_bound", "company_ended", "token_budget", "drain"]
DISPATCH_REASONS: tuple[DispatchReason, ...] = ("full", "idle", "wait_bound", "company_ended", "token_budget", "drain")

MIN_QUIET = 1e-3  # thread wake-ups and HTTP parsing spread a returning burst over about this much
BURST_SMOOTHING = 0.2  # weight of the newest in-burst gap in its running mean
QUIET_GAPS = 4  # a burst is over after this many typical gaps without an arrival
GIVE_UP_FIXED_COSTS = 2  # never wait for company longer than this many fixed costs (nor one full batch)
AGING_BATCHES = 16  # a large request yields to small ones for this many full-batch run times...
MIN_AGING, MAX_AGING = 0.05, 10.0  # ...bounded to this range, in seconds
UNMEASURED = 1.0  # seconds: the aging delay and retry_after before any batch has been measured


class WaitPolicy:
    """When a batch is worth waiting for, how long large requests yield, and when to retry. Callers lock.

    ``max_wait_ms`` None adapts (module docstring), 0 never waits, a positive value waits up to that
    long after the oldest queued item arrived. ``cost`` is fed by the batcher after each successful run.
    """

    __slots__ = ("max_wait_ms", "aging_ms", "max_batch_size", "slots", "cost", "arrivals", "_wait_started",
                 "_last_arrival", "_burst_gap", "reason", "_released", "_returned")

    def __init__(self, max_wait_ms: float | None, aging_ms: float | None, max_batch_size: int, slots: int = 1) -> None:
        self.max_wait_ms = max_wait_ms
        self.aging_ms = aging_ms
        self.max_batch_size = max_batch_size
        self.slots = slots  # batches that run at once: replicas x max_concurrent_batches
        self.cost = CostModel()
        self.arrivals = ArrivalRate()
        self.reason: DispatchReason = "idle"  # why company_delay last said to go now
        self.reset()

    def __repr__(self) -> str:
        return (f"<WaitPolicy fixed={self.cost.fixed} per_item={self.cost.per_item} "
                f"waiting_since={self._wait_started}>")

    def reset(self) -> None:
        """Forget the burst in progress (a forked child starts without one); the cost model stays."""
        self._wait_started: float | None = None
        self._last_arrival = 0.0
        self._burst_gap = MIN_QUIET  # smoothed gap between arrivals while the worker waits for company
        self._released = 0  # callers the last batch to end resolved (its company, now free to come back)
        self._returned = 0  # requests that arrived since then

    def arrived(self, now: float, n: int) -> None:
        """A request of ``n`` items was queued."""
        self._returned += 1
        self.arrivals.add(now, n)
        if self._wait_started is not None:
            self._burst_gap += BURST_SMOOTHING * (now - self._last_arrival - self._burst_gap)
        self._last_arrival = now

    def released(self, callers: int) -> None:
        """A batch ended, resolving ``callers`` requests: as many new ones mean that company has come back."""
        self._released, self._returned = callers, 0

    def dispatched(self) -> None:
        """The queue is being served (or is empty): the next wait for company starts afresh."""
        self._wait_started = None

    def why_now(
        self, now: float, depth: int, budget_full: bool, closing: bool, oldest_arrival: Callable[[float], float],
        cost: CostModel | None = None,
    ) -> tuple[DispatchReason | None, float]:
        """Why ``depth`` queued items go now; or None and how many seconds to wait for company first.

        ``budget_full``: they hold a whole token budget; ``closing``: the batcher is draining; ``cost``:
        the model of the batch about to form (its group's), when it has one of its own.
        """
        if depth >= self.max_batch_size:
            return "full", 0.0
        if budget_full:
            return "token_budget", 0.0
        if closing:
            return "drain", 0.0
        delay = self.company_delay(now, oldest_arrival, cost)
        return (self.reason, 0.0) if delay <= 0 else (None, delay)

    def company_delay(
        self, now: float, oldest_arrival: Callable[[float], float], cost: CostModel | None = None
    ) -> float:
        """Seconds worth waiting for more items before dispatching what is queued (0: go now, for ``reason``).

        ``cost`` is the model of the batch about to form (its group's), when it has one of its own.
        """
        if self.max_wait_ms is not None:
            if self.max_wait_ms == 0:
                self.reason = "idle"
                return 0.0
            self.reason = "wait_bound"
            return oldest_arrival(now) + self.max_wait_ms / 1000.0 - now
        self.reason = "idle"
        if cost is None:
            cost = self.cost
        fixed = cost.fixed
        if fixed is None or fixed <= 0:
            return 0.0
        if self._wait_started is None:
            # Company is worth waiting for only if at least one item is expected within a fixed cost.
            if self.arrivals.at(now) * fixed < 1.0:
                return 0.0
            self._wait_started = now
        self.reason = "company_ended"
        if self.slots == 1 and self._returned >= self._released > 0:
            # As many callers as the last batch released have come (a closed loop is back whole, all
            # at once as asyncio tasks are): nobody else is known to be on the way, so go now.
            return 0.0
        if self._last_arrival <= self._wait_started:
            # Nobody has come yet: callers released by the last batch may still be on their way
            # back (a client's round trip), so give them up to one fixed cost.
            return self._wait_started + fixed - now
        full = cost.estimate(self.max_batch_size) or fixed
        give_up = self._wait_started + min(GIVE_UP_FIXED_COSTS * fixed, full)
        # Once company arrives, keep waiting only while the burst goes on: returning callers come
        # close together, and a few typical in-burst gaps of silence mean it is over.
        quiet = self._last_arrival + min(max(QUIET_GAPS * self._burst_gap, MIN_QUIET), fixed / 2)
        if give_up <= quiet:
            self.reason = "wait_bound"
        return min(give_up, quiet) - now

    def aging(self) -> float:
        """Seconds a large request yields to small ones (its heap key is its arrival plus this)."""
        if self.aging_ms is not None:
            return self.aging_ms / 1000.0
        full = self.cost.estimate(self.max_batch_size)
        if full is None:
            return UNMEASURED
        return min(max(AGING_BATCHES * full, MIN_AGING), MAX_AGING)

    def batch_time(self, n: int | None = None) -> float | None:
        """Predicted seconds of a batch of ``n`` (default: a full one): the fit's estimate, capped at the
        longest batch measured; None before the first."""
        estimate, longest = self.cost.estimate(self.max_batch_size if n is None else n), self.cost.longest
        if estimate is None or longest is None:
            return None
        return min(estimate, longest)

    def retry_after(self, excess: int) -> float:
        """Seconds until ``excess`` more items would fit: the waves of batches that drain them, at least one."""
        per_batch = self.batch_time()
        if not per_batch:
            return UNMEASURED
        return max(1, math.ceil(math.ceil(excess / self.max_batch_size) / self.slots)) * per_batch

    def queue_delay(self, queued: int, running: int, n: int) -> float:
        """Predicted seconds before the last of ``n`` new items starts running (0 when nothing is known).

        The batch of ``running`` items running now (counted whole: how far it has got is not known),
        then the full batches that go before the one carrying the new items, ``slots`` at a time. An
        unmeasured function predicts no wait, so a cold start never refuses on a guess.
        """
        per_batch = self.batch_time()
        if per_batch is None:
            return 0.0
        current = (self.batch_time(running) or 0.0) if running else 0.0
        return current + (queued + n - 1) // self.max_batch_size // self.slots * per_batch

    def delay_retry_after(self, predicted: float, bound: float) -> float:
        """Seconds until a call predicted to wait ``predicted`` would wait at most ``bound``: whole batches, >= 1."""
        per_batch = self.batch_time() or UNMEASURED
        return max(1, math.ceil((predicted - bound) / per_batch)) * per_batch
