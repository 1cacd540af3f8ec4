"""Calls through one real host: results, errors as the matching microbatch errors, stats."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from microbatch import BatchSizeMismatch, ItemTooLarge, SupportsBatching
from microbatch.remote import RemoteBatcher, RemoteError
from tests._support import wait_until


def test_call_map_acall_amap_get_their_own_results(start_host: Callable[..., Any], remote: Callable[..., Any]) -> None:
    host = start_host("echo")
    rb = remote()
    assert rb("a") == ["a", host.pid]
    assert rb.map(["b", "c"]) == [["b", host.pid], ["c", host.pid]]
    assert rb.map([]) == []

    async def main() -> list[Any]:
        return await asyncio.gather(*(rb.acall(i) for i in range(50)), rb.amap([{"k": 1}, None]))

    *singles, mapped = asyncio.run(main())
    assert singles == [[i, host.pid] for i in range(50)]
    assert mapped == [[{"k": 1}, host.pid], [None, host.pid]]


def test_both_batchers_satisfy_the_shared_protocol(remote: Callable[..., Any]) -> None:
    from microbatch import Batcher

    assert isinstance(remote(), SupportsBatching)
    with Batcher(lambda xs: xs) as local:
        assert isinstance(local, SupportsBatching)


def test_one_failing_item_fails_alone_as_remote_error_naming_its_type(
    start_host: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    start_host("fails_on_boom")
    rb = remote()

    async def main() -> list[Any]:
        return await asyncio.gather(*(rb.acall(x) for x in ["a", "boom", "b"]), return_exceptions=True)

    a, boom, b = asyncio.run(main())
    assert (a, b) == ("A", "B")
    assert isinstance(boom, RemoteError)
    assert boom.type_name == "ValueError" and boom.remote_message == "cannot embed 'boom'"
    assert rb("after") == "AFTER"  # the host keeps serving


def test_a_map_with_return_exceptions_gets_its_failed_item_error_in_its_place(
    start_host: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    start_host("fails_on_boom")
    rb = remote()
    a, boom, b = rb.map(["a", "boom", "b"], return_exceptions=True)
    assert (a, b) == ("A", "B")
    assert isinstance(boom, RemoteError) and boom.type_name == "ValueError"

    async def main() -> list[Any]:
        results: list[Any] = await rb.amap(["boom", "c"], return_exceptions=True)
        return results

    boom, c = asyncio.run(main())
    assert isinstance(boom, RemoteError) and boom.remote_message == "cannot embed 'boom'" and c == "C"
    with pytest.raises(RemoteError, match="cannot embed 'boom'"):
        rb.map(["d", "boom"])  # without it the map fails whole, as Batcher.map does
    assert rb.map(["e"], return_exceptions=True) == ["E"]
    client = rb.client_stats()
    assert (client.completed, client.failed) == (4, 4)  # the map that failed whole counts both its items


def test_microbatch_errors_cross_as_themselves(start_host: Callable[..., Any], remote: Callable[..., Any]) -> None:
    start_host("wrong_count", name="wrong")
    start_host("echo", "--max-batch-tokens", "3", name="tokens")
    with pytest.raises(BatchSizeMismatch) as mismatch:
        remote("wrong")("x")
    assert (mismatch.value.expected, mismatch.value.got) == (1, 0)
    with pytest.raises(ItemTooLarge, match="max_batch_tokens=3"):
        remote("tokens")("four")


def test_stats_show_the_client_beside_the_host(start_host: Callable[..., Any], remote: Callable[..., Any]) -> None:
    host = start_host("echo", "--max-batch-size", "8")
    rb = remote()
    rb.map(list(range(10)))
    rb("one")
    wait_until(lambda: rb.stats.completed == 11, "the host reports its 11 completed items")
    stats = rb.stats
    assert stats.client.completed == 11 and stats.client.in_flight == 0
    assert 0 < stats.client.round_trip_p50 <= stats.client.round_trip_p99
    assert [h.consumer.split(":")[1] for h in stats.hosts.values()] == [str(host.pid)]
    assert rb.max_batch_size == 8
    assert stats.as_dict()["client"]["completed"] == 11


def test_prometheus_collector_reads_a_remote_batcher(
    start_host: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from microbatch.prometheus import BatcherCollector

    start_host("echo")
    rb = remote()
    rb.map(["a", "b", "c"])
    wait_until(lambda: rb.stats.completed == 3, "the host reports its items")
    registry = CollectorRegistry()
    registry.register(BatcherCollector({"embed": rb}))
    text = generate_latest(registry).decode()
    assert 'microbatch_completed_items_total{batcher="embed"} 3.0' in text


def test_a_closed_remote_batcher_refuses_calls(remote: Callable[..., Any]) -> None:
    from microbatch import BatcherClosed

    rb: RemoteBatcher[str, str] = remote()
    rb.close()
    assert rb.closed
    with pytest.raises(BatcherClosed):
        rb("x")


def test_the_hosts_reading_of_redis_clock_matches_this_machines_clock(r: Any) -> None:
    import time

    from microbatch.remote._redis import clock_offset

    before = time.time()
    redis_now, offset = clock_offset(r)
    after = time.time()
    # One machine, one clock: Redis's reading falls inside the round trip, and the offset is within half of it.
    assert before - 0.001 <= redis_now <= after + 0.001
    assert abs(offset) <= (after - before) / 2 + 0.001
