"""When to dispatch: the measured cost model of the batch function and the adaptive wait rule.

A batch of ``n`` items costs about ``a + b*n`` seconds: ``a`` is the fixed cost of one call (Python
overhead, kernel launches, a network round trip) and ``b`` the cost of each item. Batching pays
because it shares ``a``. When the worker is idle and fewer than ``max_batch_size`` items wait,
dispatching now costs ``a/q + b`` of worker time per item; waiting for ``λw`` more items (``λ`` the
arrival rate) costs ``(w + a)/(q + λw) + b``. Waiting is the better deal exactly when ``q < λ·a``:
when more items are expected within one fixed cost than are already queued. So the adaptive policy
waits only then, only while items keep arriving (a closed-loop burst of callers coming back), and
never longer than ``a`` itself, the most that merging can save. A lone request, a quiet service, or a
cheap function (tiny ``a``) never waits.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["ArrivalRate", "CostModel"]


class CostModel:
    """Least-squares fit of ``duration ≈ a + b*n`` over the most recent batches.

    Kept as running sums so that a refit costs the same few operations whatever the window: it
    runs on the worker after every batch, where each microsecond is a lone caller's latency.
    """

    __slots__ = ("_samples", "_sn", "_st", "_snn", "_snt", "fixed", "per_item")

    def __init__(self, window: int = 64) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._sn = self._st = self._snn = self._snt = 0.0
        self.fixed: float | None = None
        self.per_item: float | None = None

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

    def __init__(self, tau: float = 0.5) -> None:
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
