"""Prometheus metrics for batchers: a custom collector that reads each batcher's stats at scrape time.

::

    from prometheus_client import CollectorRegistry, generate_latest
    from microbatch.prometheus import BatcherCollector

    registry = CollectorRegistry()
    registry.register(BatcherCollector({"embed": embed_batcher}))
    text = generate_latest(registry)      # serve it at /metrics

Nothing is recorded twice: the batcher already keeps its counters and cumulative histograms
(:class:`~microbatch.Stats`), so a scrape takes one consistent snapshot per batcher and reports it.
Every series carries a ``batcher`` label, the batcher's key in the mapping. Pass a callable returning
the mapping when the batchers are created after the collector (an app factory, a lazy registry).

A key may map to a collection of batchers, which are reported summed under that one label: the
per-instance batchers of an ``@batch`` method (``{"embed": lambda: Model.embed.instances()}`` inside
the callable) stay one series however many instances come and go, so the label set stays bounded.
The counters of an instance's batcher leave the sum when the instance is collected (Prometheus sees a
counter reset); give long-lived instances keys of their own where exact totals matter.

This module is the only part of microbatch that needs ``prometheus_client``; the engine never imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Protocol

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        StateSetMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "microbatch.prometheus needs prometheus_client: pip install prometheus-client"
    ) from exc

from ._policy import DISPATCH_REASONS
from ._stats import Histogram, Stats

__all__ = ["BatcherCollector", "StatsSource"]

_LABELS = ("batcher",)

# (metric name, help, the Stats field it reports): item counters, each item counted once.
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("microbatch_submitted_items", "Items accepted into the queue.", "submitted"),
    ("microbatch_completed_items", "Items that got a result.", "completed"),
    ("microbatch_failed_items", "Items whose batch function call raised (or that the circuit breaker failed).",
     "failed"),
    ("microbatch_rejected_items",
     "Items refused at admission (queue full, closed, too many tokens, circuit breaker open).", "rejected"),
    ("microbatch_expired_items", "Items whose deadline passed before their result was ready.", "expired"),
    ("microbatch_expired_running_items",
     "Expired items whose deadline passed after dispatch, while the batch function ran them (wasted work).",
     "expired_running"),
    ("microbatch_cancelled_items", "Items cancelled by their caller or dropped by close(drain=False).", "cancelled"),
    ("microbatch_batches", "Calls of the batch function.", "batches"),
    ("microbatch_retries", "Calls of the batch function beyond the first of a batch (bisection).", "retries"),
    ("microbatch_breaker_opened", "Times the circuit breaker opened after batch-wide failures.", "breaker_opened"),
    ("microbatch_coalesced_items", "Items that joined an identical item in flight instead of being computed.",
     "coalesced"),
)
_BREAKER_STATES = ("closed", "open", "half_open")


class StatsSource(Protocol):
    """What the collector reads: a :class:`~microbatch.Batcher`, or anything exposing the same two attributes."""

    @property
    def stats(self) -> Stats: ...

    @property
    def max_batch_size(self) -> int: ...


Batchers = Mapping[str, StatsSource | Collection[StatsSource]]


class BatcherCollector:
    """A ``prometheus_client`` collector reporting the stats of named batchers, read at each scrape.

    Register it with a ``CollectorRegistry``. ``batchers`` maps a name (the ``batcher`` label) to a
    batcher or a collection of batchers reported summed, or is a no-argument callable returning such
    a mapping, called at every scrape.
    """

    __slots__ = ("_batchers",)

    def __init__(self, batchers: Batchers | Callable[[], Batchers]) -> None:
        self._batchers = batchers

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples, so registering never has to read a batcher."""
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        """One snapshot of every batcher's stats, as metric families labelled by batcher name."""
        batchers = self._batchers() if callable(self._batchers) else self._batchers
        families = _Families()
        for name, source in batchers.items():
            sources = list(source) if isinstance(source, Collection) else [source]
            if not sources:
                continue
            stats = _summed([s.stats for s in sources])
            labels = [name]
            _add_batch_sizes(families.batch_size, labels, stats.batch_sizes, max(s.max_batch_size for s in sources))
            _add_histogram(families.queue_wait, labels, stats.queue_wait)
            _add_histogram(families.run_time, labels, stats.run_time)
            families.queue_depth.add_metric(labels, stats.queue_depth)
            families.in_flight.add_metric(labels, stats.in_flight)
            for field, counter in families.counters.items():
                counter.add_metric(labels, getattr(stats, field))
            for reason in DISPATCH_REASONS:
                families.reasons.add_metric([name, reason], stats.dispatch_reasons.get(reason, 0))
            families.breaker.add_metric(labels, {state: stats.breaker_state == state for state in _BREAKER_STATES})
        yield from families.all()

    def __repr__(self) -> str:
        return f"<BatcherCollector {self._batchers!r}>"


class _Families:
    """A fresh, empty set of the metric families a scrape fills."""

    __slots__ = ("batch_size", "queue_wait", "run_time", "queue_depth", "in_flight", "counters", "reasons", "breaker")

    def __init__(self) -> None:
        self.batch_size = HistogramMetricFamily(
            "microbatch_batch_size", "Items per call of the batch function.", labels=_LABELS
        )
        self.queue_wait = HistogramMetricFamily(
            "microbatch_queue_wait_seconds", "Time from a request's arrival to its dispatch in a batch.", labels=_LABELS
        )
        self.run_time = HistogramMetricFamily(
            "microbatch_run_time_seconds", "Duration of one call of the batch function.", labels=_LABELS
        )
        self.queue_depth = GaugeMetricFamily(
            "microbatch_queue_depth", "Items waiting to be dispatched.", labels=_LABELS
        )
        self.in_flight = GaugeMetricFamily(
            "microbatch_in_flight", "Accepted items not yet resolved (queued or running).", labels=_LABELS
        )
        # Keyed by the Stats field each counter reports.
        self.counters = {field: CounterMetricFamily(name, text, labels=_LABELS) for name, text, field in _COUNTERS}
        self.reasons = CounterMetricFamily(
            "microbatch_dispatched_batches", "Batches dispatched, by why they were sent (the README lists reasons).",
            labels=(*_LABELS, "reason"),
        )
        self.breaker = StateSetMetricFamily(
            "microbatch_breaker_state", "The circuit breaker's state: closed, open or half_open.", labels=_LABELS
        )

    def all(self) -> Iterator[Metric]:
        yield from (self.batch_size, self.queue_wait, self.run_time, self.queue_depth, self.in_flight)
        yield from self.counters.values()
        yield from (self.reasons, self.breaker)


def _summed(snapshots: list[Stats]) -> Stats:
    """One Stats for several batchers: counts, gauges and histograms added; other fields the largest value."""
    if len(snapshots) == 1:
        return snapshots[0]
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Stats):
        column = [getattr(s, field.name) for s in snapshots]
        first = column[0]
        if isinstance(first, bool) or isinstance(first, str):
            values[field.name] = first
        elif isinstance(first, int):
            values[field.name] = sum(column)
        elif isinstance(first, Histogram):
            values[field.name] = Histogram(
                first.bounds, tuple(map(sum, zip(*(h.counts for h in column), strict=True))),
                sum(h.count for h in column), sum(h.sum for h in column),
            )
        elif isinstance(first, Mapping):
            merged: dict[Any, int] = {}
            for mapping in column:
                for key, count in mapping.items():
                    merged[key] = merged.get(key, 0) + count
            values[field.name] = merged
        else:  # percentiles, costs: not additive, and not reported by this collector
            values[field.name] = max((v for v in column if v is not None), default=None)
    return Stats(**values)


def _le(bound: float) -> str:
    return repr(float(bound))  # finite by construction; "+Inf" is appended by the callers


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    # Stats keeps cumulative counts per bound; observations above the last bound only reach +Inf.
    buckets = [(_le(bound), float(count)) for bound, count in zip(histogram.bounds, histogram.counts, strict=True)]
    buckets.append(("+Inf", float(histogram.count)))
    family.add_metric(labels, buckets, histogram.sum)


def _add_batch_sizes(
    family: HistogramMetricFamily, labels: list[str], sizes: Mapping[int, int], max_batch_size: int
) -> None:
    # Fixed bounds 1, 2, 4, ... and max_batch_size itself, so the series never change shape between scrapes.
    bounds = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size] + [max_batch_size]
    buckets = [(_le(b), float(sum(n for size, n in sizes.items() if size <= b))) for b in bounds]
    buckets.append(("+Inf", float(sum(sizes.values()))))
    family.add_metric(labels, buckets, float(sum(size * n for size, n in sizes.items())))
