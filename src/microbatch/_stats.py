"""Statistics: the frozen :class:`Stats` snapshot and the small recorders behind it."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Histogram", "Stats"]

# Seconds; the Prometheus client's default buckets with a finer low end, since a batcher's
# queue waits are often sub-millisecond.
TIME_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative histogram: ``counts[i]`` observations were ``<= bounds[i]``; ``count`` in all."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float


@dataclass(frozen=True, slots=True)
class Stats:
    """A consistent snapshot of a batcher's counters and recent timings.

    Item counters count items, so a ``map`` of 64 items adds 64 to ``submitted``. Every accepted item
    ends in exactly one of ``completed``, ``failed``, ``expired`` or ``cancelled`` (which includes
    items dropped by ``close(drain=False)``); ``rejected`` counts items refused at admission.
    Percentiles are over the most recent observations (a window of ``window`` values).
    ``fixed_cost``/``per_item_cost`` are the measured cost model (seconds per call, per item);
    ``padding_efficiency`` (length-aware batchers) is real tokens over padded tokens.
    """

    name: str
    submitted: int
    completed: int
    failed: int
    rejected: int
    expired: int
    cancelled: int
    batches: int
    queue_depth: int
    running: int
    mean_batch_size: float
    batch_sizes: Mapping[int, int]
    queue_wait_p50: float
    queue_wait_p99: float
    run_time_p50: float
    run_time_p99: float
    queue_wait: Histogram
    run_time: Histogram
    fixed_cost: float | None
    per_item_cost: float | None
    window: int
    padding_efficiency: float | None = None

    @property
    def in_flight(self) -> int:
        """Accepted items not yet resolved (queued or running)."""
        return self.submitted - self.completed - self.failed - self.expired - self.cancelled

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-serialisable data."""
        data = asdict(self)
        data["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        data["in_flight"] = self.in_flight
        return data


class TimingRecorder:
    """Recent values for percentiles plus a cumulative histogram. Not thread-safe: callers lock."""

    __slots__ = ("_recent", "_counts", "_count", "_sum")

    def __init__(self, window: int) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._counts = [0] * len(TIME_BUCKETS)
        self._count = 0
        self._sum = 0.0

    def add(self, value: float) -> None:
        self._recent.append(value)
        i = bisect.bisect_left(TIME_BUCKETS, value)
        if i < len(self._counts):
            self._counts[i] += 1
        self._count += 1
        self._sum += value

    def percentiles(self) -> tuple[float, float]:
        if not self._recent:
            return 0.0, 0.0
        ordered = sorted(self._recent)
        return _pick(ordered, 0.50), _pick(ordered, 0.99)

    def histogram(self) -> Histogram:
        cumulative: list[int] = []
        running = 0
        for c in self._counts:
            running += c
            cumulative.append(running)
        return Histogram(TIME_BUCKETS, tuple(cumulative), self._count, self._sum)


def _pick(ordered: list[float], q: float) -> float:
    # Nearest-rank percentile (rank ceil(q*n)): always an observed value, so one slow run in 60 shows in p99.
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]
