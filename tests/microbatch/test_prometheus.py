"""microbatch.prometheus.BatcherCollector: a real registry scraped with ``generate_latest`` and the text
parsed back with prometheus_client's own parser; every number must equal the batcher's stats."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from microbatch import DeadlineExceeded, Overloaded
from microbatch.prometheus import BatcherCollector

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

COUNTERS = {
    "microbatch_submitted_items_total": "submitted",
    "microbatch_completed_items_total": "completed",
    "microbatch_failed_items_total": "failed",
    "microbatch_rejected_items_total": "rejected",
    "microbatch_expired_items_total": "expired",
    "microbatch_cancelled_items_total": "cancelled",
    "microbatch_batches_total": "batches",
}


def scrape(registry: CollectorRegistry) -> tuple[dict[str, str], Samples]:
    """The exposition text parsed back: each family's type, and every sample's value by name and labels."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def collector_registry(batchers: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BatcherCollector(batchers))
    return registry


def test_batch_sizes_become_a_histogram_with_power_of_two_buckets_up_to_max_batch_size(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any
) -> None:
    b = make_batcher(gate, max_batch_size=12, max_wait_ms=0, name="sizes")
    calls = [spawn(b, "first")]
    gate.wait_blocked()
    for i in range(5):
        calls.append(spawn(b, i))
        queued(b, i + 1)
    gate.open()
    for call in calls:
        call.result()
    assert b.map(range(12)) == [("out", i) for i in range(12)]
    assert gate.sizes == [1, 5, 12]

    types, samples = scrape(collector_registry({"embed": b}))

    assert types["microbatch_batch_size"] == "histogram"
    buckets = {le: value(samples, "microbatch_batch_size_bucket", batcher="embed", le=le)
               for le in ("1.0", "2.0", "4.0", "8.0", "12.0", "+Inf")}
    assert buckets == {"1.0": 1, "2.0": 1, "4.0": 1, "8.0": 2, "12.0": 3, "+Inf": 3}
    assert value(samples, "microbatch_batch_size_count", batcher="embed") == 3
    assert value(samples, "microbatch_batch_size_sum", batcher="embed") == 18


def test_counters_and_timing_histograms_equal_the_batchers_stats(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ValueError("bad item")
        return items

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=4, max_queue_size=4, max_wait_ms=0, name="counted")
    blocker = spawn(b, "blocker")
    gate.wait_blocked()
    bad = spawn(b, "bad")
    expiring = spawn(b, "late", timeout=0.001)
    assert isinstance(expiring.exception(), DeadlineExceeded)
    queued(b, 1)
    fill = spawn(b.map, ["f0", "f1", "f2"])
    queued(b, 4)
    with pytest.raises(Overloaded):
        b("rejected")
    gate.open()
    assert isinstance(bad.exception(), ValueError)
    assert blocker.result() == "blocker" and fill.result() == ["f0", "f1", "f2"]
    stats = b.stats
    assert (stats.completed, stats.failed, stats.expired, stats.rejected) == (4, 1, 1, 1)

    types, samples = scrape(collector_registry({"counted": b}))

    for name, field in COUNTERS.items():
        assert types[name.removesuffix("_total")] == "counter"
        assert value(samples, name, batcher="counted") == getattr(stats, field), name
    for metric, histogram in (("microbatch_queue_wait_seconds", stats.queue_wait),
                              ("microbatch_run_time_seconds", stats.run_time)):
        assert types[metric] == "histogram"
        assert value(samples, f"{metric}_count", batcher="counted") == histogram.count > 0
        assert value(samples, f"{metric}_sum", batcher="counted") == pytest.approx(histogram.sum)
        for bound, count in zip(histogram.bounds, histogram.counts, strict=True):
            assert value(samples, f"{metric}_bucket", batcher="counted", le=repr(bound)) == count
        assert value(samples, f"{metric}_bucket", batcher="counted", le="+Inf") == histogram.count


def test_gauges_show_the_live_queue_at_scrape_time(make_batcher: Any, gate: Any, spawn: Any, queued: Any) -> None:
    b = make_batcher(gate, max_batch_size=1, max_wait_ms=0, name="live")
    registry = collector_registry({"live": b})
    calls = [spawn(b, "running")]
    gate.wait_blocked()
    for i in range(3):
        calls.append(spawn(b, i))
        queued(b, i + 1)

    types, samples = scrape(registry)
    assert types["microbatch_queue_depth"] == types["microbatch_in_flight"] == "gauge"
    assert value(samples, "microbatch_queue_depth", batcher="live") == 3
    assert value(samples, "microbatch_in_flight", batcher="live") == 4

    gate.open()
    for call in calls:
        call.result()
    _, samples = scrape(registry)
    assert value(samples, "microbatch_queue_depth", batcher="live") == 0
    assert value(samples, "microbatch_in_flight", batcher="live") == 0


def test_each_batcher_gets_its_own_label_and_a_callable_is_read_at_every_scrape_not_at_registration(
    make_batcher: Any, make_gate: Any
) -> None:
    first = make_batcher(make_gate(open=True), name="first")
    second = make_batcher(make_gate(open=True), name="second")
    current: dict[str, Any] = {"a": first}
    reads = []

    def batchers() -> dict[str, Any]:
        reads.append(1)
        return current

    registry = collector_registry(batchers)
    assert reads == [], "registering must not read the batchers (they may not exist yet)"
    first("x")
    _, samples = scrape(registry)
    assert value(samples, "microbatch_completed_items_total", batcher="a") == 1
    assert not any(dict(labels).get("batcher") == "b" for _, labels in samples)

    current["b"] = second
    second.map(["y", "z"])
    _, samples = scrape(registry)
    assert len(reads) == 2
    assert value(samples, "microbatch_completed_items_total", batcher="a") == 1
    assert value(samples, "microbatch_completed_items_total", batcher="b") == 2


def test_two_collectors_with_the_same_metric_names_clash_in_one_registry(make_batcher: Any, make_gate: Any) -> None:
    registry = collector_registry({"a": make_batcher(make_gate(open=True))})
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(BatcherCollector({}))
