"""Statistics of remote batching: the client's own counts beside the stats its hosts publish to Redis."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._stats import TIME_BUCKETS, Histogram, Stats

__all__ = ["ClientStats", "HostStats", "RemoteStats", "RoundTrips", "merge", "stats_from_data", "stats_to_data"]

_WINDOW = 1024


@dataclass(frozen=True, slots=True)
class ClientStats:
    """One client process's view of one remote batcher (counted in items).

    Every item a caller sent ends in one of ``completed``, ``failed`` (the host's error, or Redis lost),
    ``expired`` (no result within the timeout) or ``cancelled``; ``rejected`` counts items refused
    at once (``Overloaded``, Redis unreachable). ``round_trip_p50/p99`` are seconds from the call to
    its result, over the last ``window`` successful calls.
    """

    submitted: int
    completed: int
    failed: int
    rejected: int
    expired: int
    cancelled: int
    unavailable: int
    round_trip_p50: float
    round_trip_p99: float
    window: int

    @property
    def in_flight(self) -> int:
        """Items sent and not yet resolved."""
        return self.submitted - self.completed - self.failed - self.expired - self.cancelled


@dataclass(frozen=True, slots=True)
class HostStats:
    """What one host last published: its Batcher's stats and what it settled without running."""

    consumer: str
    stats: Stats
    max_batch_size: int
    expired_unrun: int  # items whose deadline had passed when the host read them (never run)
    claimed: int  # entries taken over from a host that stopped answering
    age: float  # seconds since it published
    cancelled_unrun: int = 0  # items whose caller gave up before the host read them (never run)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteStats(Stats):
    """A remote batcher's stats. The :class:`~microbatch.Stats` fields add up the live hosts' own
    batchers (percentiles: the highest host's), so tools that read a Batcher's stats (``/stats``,
    :class:`~microbatch.prometheus.BatcherCollector`) read these alike; ``client`` is this process's
    side, ``hosts`` each live host's last report.
    """

    client: ClientStats
    hosts: Mapping[str, HostStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = Stats.as_dict(self)
        data["client"] = {**_plain(self.client), "in_flight": self.client.in_flight}
        data["hosts"] = {name: {**_plain(h), "stats": h.stats.as_dict()} for name, h in self.hosts.items()}
        return data


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


class RoundTrips:
    """Recent round-trip times for percentiles; thread-safe."""

    __slots__ = ("_lock", "_recent")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=_WINDOW)

    def add(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(seconds)

    def percentiles(self) -> tuple[float, float]:
        with self._lock:
            ordered = sorted(self._recent)
        if not ordered:
            return 0.0, 0.0
        return _rank(ordered, 0.50), _rank(ordered, 0.99)

    def __repr__(self) -> str:
        return f"<RoundTrips n={len(self._recent)}>"


def _rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


# ------------------------------------------------------------------------------ on the wire


def stats_to_data(stats: Stats) -> dict[str, Any]:
    """A Stats snapshot as msgpack-able data (what a host publishes)."""
    data = stats.as_dict()
    data.pop("in_flight", None)
    return data


def stats_from_data(data: Mapping[str, Any]) -> Stats:
    values = dict(data)
    values.pop("in_flight", None)
    values["batch_sizes"] = {int(k): v for k, v in values["batch_sizes"].items()}
    if "dispatch_reasons" in values:  # hosts of older versions do not publish it
        values["dispatch_reasons"] = MappingProxyType(dict(values["dispatch_reasons"]))
    for name in ("queue_wait", "run_time"):
        h = values[name]
        values[name] = Histogram(tuple(h["bounds"]), tuple(h["counts"]), h["count"], h["sum"])
    known = Stats.__dataclass_fields__
    return Stats(**{k: v for k, v in values.items() if k in known})


def merge(name: str, hosts: Mapping[str, HostStats], client: ClientStats) -> RemoteStats:
    """One RemoteStats: counters and histograms summed over hosts, percentiles the worst host's."""
    parts = [h.stats for h in hosts.values()]
    sizes: dict[int, int] = {}
    for s in parts:
        for size, n in s.batch_sizes.items():
            sizes[size] = sizes.get(size, 0) + n
    batches = sum(s.batches for s in parts)
    items_run = sum(size * n for size, n in sizes.items())
    unrun_expired = sum(h.expired_unrun for h in hosts.values())
    unrun_cancelled = sum(h.cancelled_unrun for h in hosts.values())

    def total(field_name: str) -> int:
        return sum(int(getattr(s, field_name)) for s in parts)

    def worst(field_name: str) -> float:
        return max((float(getattr(s, field_name)) for s in parts), default=0.0)

    busiest = max(parts, key=lambda s: s.batches, default=None)
    reasons: dict[str, int] = {}
    for s in parts:
        for reason, n in s.dispatch_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    states = {s.breaker_state for s in parts}
    breaker = next((state for state in ("open", "half_open") if state in states), "closed")
    efficiencies = [s.padding_efficiency for s in parts if s.padding_efficiency is not None]
    return RemoteStats(
        name=name,
        # Items a host settled unrun count as submitted and expired (or cancelled): each ends in one outcome.
        submitted=total("submitted") + unrun_expired + unrun_cancelled,
        completed=total("completed"),
        failed=total("failed"),
        rejected=total("rejected") + client.rejected,
        expired=total("expired") + unrun_expired,
        cancelled=total("cancelled") + unrun_cancelled,
        batches=batches,
        queue_depth=total("queue_depth"),
        running=total("running"),
        mean_batch_size=items_run / batches if batches else 0.0,
        batch_sizes=sizes,
        queue_wait_p50=worst("queue_wait_p50"),
        queue_wait_p99=worst("queue_wait_p99"),
        run_time_p50=worst("run_time_p50"),
        run_time_p99=worst("run_time_p99"),
        queue_wait=_sum_histograms([s.queue_wait for s in parts]),
        run_time=_sum_histograms([s.run_time for s in parts]),
        fixed_cost=busiest.fixed_cost if busiest is not None else None,
        per_item_cost=busiest.per_item_cost if busiest is not None else None,
        window=sum(s.window for s in parts),
        padding_efficiency=min(efficiencies) if efficiencies else None,
        retries=total("retries"),
        expired_running=total("expired_running"),
        dispatch_reasons=MappingProxyType(reasons),
        breaker_state=breaker,  # the worst host's
        breaker_opened=total("breaker_opened"),
        coalesced=total("coalesced"),
        client=client,
        hosts=dict(hosts),
    )


def _sum_histograms(histograms: list[Histogram]) -> Histogram:
    if not histograms:
        return Histogram(TIME_BUCKETS, (0,) * len(TIME_BUCKETS), 0, 0.0)
    bounds = histograms[0].bounds
    counts = [sum(h.counts[i] for h in histograms if h.bounds == bounds) for i in range(len(bounds))]
    return Histogram(bounds, tuple(counts), sum(h.count for h in histograms), sum(h.sum for h in histograms))
