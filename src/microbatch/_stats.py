"""Statistics: the frozen :class:`Stats` snapshot and the recorders behind it."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._policy import DISPATCH_REASONS

if TYPE_CHECKING:
    from ._cost import CostModel

__all__ = ["Histogram", "Stats", "StatsRecorder"]

WINDOW = 1024  # recent observations the percentiles are taken over

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
    items dropped by ``close(drain=False)``); ``rejected`` counts items refused at admission (queue full,
    closed, too many tokens, circuit breaker open). ``expired_running`` is the part of ``expired``
    whose items had been dispatched (the model's wasted work). ``batches`` counts calls of the batch
    function, ``retries`` those beyond the first of a batch (bisection); ``dispatch_reasons`` counts
    dispatched batches by why they were sent (``DISPATCH_REASONS``; the README explains each).
    ``breaker_state`` is ``closed``, ``open`` or ``half_open``; ``breaker_opened`` counts openings.
    Percentiles are over the most recent observations (a window of ``window`` values).
    ``fixed_cost``/``per_item_cost`` are the measured cost model (seconds per call, per item);
    ``padding_efficiency`` (length-aware batchers) is real tokens over padded tokens. ``coalesced``
    counts submitted items that joined an identical item in flight instead of being computed
    (``coalesce``); they end in an outcome counter like any other.
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
    retries: int = 0
    expired_running: int = 0
    dispatch_reasons: Mapping[str, int] = field(default_factory=lambda: _frozen(dict.fromkeys(DISPATCH_REASONS, 0)))
    breaker_state: str = "closed"
    breaker_opened: int = 0
    coalesced: int = 0

    @property
    def in_flight(self) -> int:
        """Accepted items not yet resolved (queued or running)."""
        return self.submitted - self.completed - self.failed - self.expired - self.cancelled

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-serialisable data."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("queue_wait", "run_time"):
            data[name] = asdict(data[name])
        data["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        data["dispatch_reasons"] = dict(self.dispatch_reasons)
        data["in_flight"] = self.in_flight
        return data


def _frozen(counts: dict[str, int]) -> Mapping[str, int]:
    return MappingProxyType(counts)


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


class StatsRecorder:
    """A batcher's counters and timings, kept under the batcher's lock, and their :class:`Stats` snapshot."""

    __slots__ = (
        "submitted", "completed", "failed", "rejected", "expired", "cancelled", "batches", "items_run", "sizes",
        "queue_wait", "run_time", "real_tokens", "padded_tokens", "retries", "expired_running", "reasons",
        "queue_wait", "run_time", "real_tokens", "padded_tokens", "coalesced", "running",
    )

    def __init__(self) -> None:
        self.submitted = self.completed = self.failed = self.rejected = 0
        self.expired = self.cancelled = self.batches = self.items_run = 0
        self.sizes: dict[int, int] = {}
        self.queue_wait = TimingRecorder(WINDOW)
        self.run_time = TimingRecorder(WINDOW)
        self.real_tokens = self.padded_tokens = 0
        self.retries = self.expired_running = 0
        self.reasons: dict[str, int] = dict.fromkeys(DISPATCH_REASONS, 0)
        self.coalesced = 0
        self.running = 0  # items in the batches being run

    def __repr__(self) -> str:
        return f"<StatsRecorder submitted={self.submitted} completed={self.completed} batches={self.batches}>"

    def resolved(self, outcome: str, n: int, dispatched: int) -> None:
        """Count ``n`` items ending as ``outcome`` (completed, failed, expired or cancelled); ``dispatched`` ran."""
        if outcome == "completed":
            self.completed += n
        elif outcome == "failed":
            self.failed += n
        elif outcome == "expired":
            self.expired += n
            self.expired_running += dispatched
        else:
            self.cancelled += n

    def ran(self, n: int, seconds: float) -> None:
        """One call of the batch function on ``n`` items took ``seconds``."""
        self.batches += 1
        self.items_run += n
        self.sizes[n] = self.sizes.get(n, 0) + 1
        self.run_time.add(seconds)

    def snapshot(
        self, name: str, queue_depth: int, running: int, cost: CostModel, breaker: tuple[str, int] = ("closed", 0)
    ) -> Stats:
        """The snapshot; ``breaker`` is the circuit breaker's state and times opened."""
        qw50, qw99 = self.queue_wait.percentiles()
        rt50, rt99 = self.run_time.percentiles()
        return Stats(
            name=name,
            submitted=self.submitted,
            completed=self.completed,
            failed=self.failed,
            rejected=self.rejected,
            expired=self.expired,
            cancelled=self.cancelled,
            batches=self.batches,
            queue_depth=queue_depth,
            running=running,
            mean_batch_size=self.items_run / self.batches if self.batches else 0.0,
            batch_sizes=dict(self.sizes),
            queue_wait_p50=qw50,
            queue_wait_p99=qw99,
            run_time_p50=rt50,
            run_time_p99=rt99,
            queue_wait=self.queue_wait.histogram(),
            run_time=self.run_time.histogram(),
            fixed_cost=cost.fixed,
            per_item_cost=cost.per_item,
            window=WINDOW,
            padding_efficiency=self.real_tokens / self.padded_tokens if self.padded_tokens else None,
            retries=self.retries,
            expired_running=self.expired_running,
            dispatch_reasons=_frozen(dict(self.reasons)),
            breaker_state=breaker[0],
            breaker_opened=breaker[1],
            coalesced=self.coalesced,
        )
