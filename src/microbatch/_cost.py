"""The measurements the wait policy reads: the batch function's cost model and the arrival rate.

:class:`CostModel` fits a batch's run time as ``a + b*n`` (``a`` the fixed cost of one call, ``b``
the cost of each item) over the most recent batches; :class:`ArrivalRate` follows how many items
arrive per second. Both only measure: what to do with the figures is :mod:`._policy`'s.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["COST_WINDOW", "RATE_TAU", "ArrivalRate", "CostModel"]

COST_WINDOW = 64  # batches the cost model is fitted over: recent enough to follow a warming model
RATE_TAU = 0.5  # seconds; the arrival rate's memory, a few client round trips


class CostModel:
    """Least-squares fit of ``duration ≈ a + b*n`` over the most recent batches.

    Kept as running sums so that a refit costs the same few operations whatever the window: it
    runs on the worker after every batch, where each microsecond is a lone caller's latency.
    """

    __slots__ = ("_samples", "_sn", "_st", "_snn", "_snt", "fixed", "per_item")

    def __init__(self, window: int = COST_WINDOW) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._sn = self._st = self._snn = self._snt = 0.0
        self.fixed: float | None = None
        self.per_item: float | None = None

    @property
    def longest(self) -> float | None:
        """The longest recent batch, in seconds (None before the first); read on refusals only."""
        return max((t for _, t in self._samples), default=None)

    def add(self, n: int, duration: float) -> None:
        if len(self._samples) == self._samples.maxlen:
            old_n, old_t = self._samples[0]
            self._sn -= old_n
            self._st -= old_t
            self._snn -= old_n * old_n
            self._snt -= old_n * old_t
        self._samples.append((n, duration))
        self._sn += n
        self._st += duration
        self._snn += n * n
        self._snt += n * duration
        self._refit()

    def _refit(self) -> None:
        k = len(self._samples)
        mean_n, mean_t = self._sn / k, self._st / k
        var_n = self._snn / k - mean_n * mean_n
        if var_n >= 0.25:
            b = max(0.0, (self._snt / k - mean_n * mean_t) / var_n)
        elif self.per_item is not None:
            # All recent batches had one size, so the split is unidentifiable; keep the last slope.
            b = self.per_item
        else:
            # No evidence of a fixed cost yet: assume none, so nothing waits for company and a full
            # batch is not underestimated (aging, retry_after) until batches of other sizes show it.
            b = mean_t / mean_n if mean_n > 0 else 0.0
        a = min(max(0.0, mean_t - b * mean_n), mean_t)
        self.fixed, self.per_item = a, b

    def estimate(self, n: int) -> float | None:
        """Predicted seconds for a batch of ``n``, or None before the first batch."""
        if self.fixed is None or self.per_item is None:
            return None
        return self.fixed + self.per_item * n


class ArrivalRate:
    """Exponentially decayed arrival rate in items per second (time constant ``tau`` seconds)."""

    __slots__ = ("_tau", "_rate", "_last")

    def __init__(self, tau: float = RATE_TAU) -> None:
        self._tau = tau
        self._rate = 0.0
        self._last: float | None = None

    def add(self, now: float, n: int) -> None:
        if self._last is not None:
            self._rate *= math.exp(-(now - self._last) / self._tau)
        self._rate += n / self._tau
        self._last = now

    def at(self, now: float) -> float:
        if self._last is None:
            return 0.0
        return self._rate * math.exp(-(now - self._last) / self._tau)
