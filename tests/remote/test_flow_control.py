"""Deadlines, cancellation and backpressure across the wire, and small requests first across clients.

A ``gated`` host records each batch in Redis and then waits for a token the test pushes to the
``gate`` list: the test holds the host's model with one request, queues what it wants behind it
(waiting until the host's published stats show it queued), then opens the gate and reads from
Redis what reached the model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from microbatch import DeadlineExceeded, Overloaded
from microbatch.remote import RemoteBatcher
from tests._support import wait_until

from .conftest import ROOT, RedisServer, host_env


def ran(r: redis.Redis, fn: str = "gated") -> list[list[Any]]:
    return [json.loads(batch) for batch in r.lrange(f"ran:{fn}", 0, -1)]


def hold_the_model(rb: RemoteBatcher[Any, Any], r: redis.Redis) -> threading.Thread:
    """Start a call that enters the gated model and stays there until the gate opens."""
    thread = threading.Thread(target=rb, args=("blocker",), daemon=True)
    thread.start()
    wait_until(lambda: ran(r) == [["blocker"]], "the blocker is inside the model")
    return thread


def test_small_requests_from_one_client_overtake_a_large_map_from_another(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis, redis_server: RedisServer
) -> None:
    start_host("gated", "--max-batch-size", "4", "--aging-ms", "60000", "--prefetch", "64")
    rb = remote()
    blocker = hold_the_model(rb, r)
    large = [f"L{i}" for i in range(12)]
    other_client = subprocess.Popen(
        [sys.executable, "-c",
         "import json, sys; from microbatch.remote import RemoteBatcher; "
         f"print(json.dumps(RemoteBatcher('t', url={redis_server.url!r}).map({large!r})))"],
        env=host_env(redis_server.url), cwd=ROOT, stdout=subprocess.PIPE,
    )
    wait_until(lambda: rb.stats.queue_depth == 12, "the large map waits at the host")
    smalls: list[Any] = []
    callers = [threading.Thread(target=lambda s=s: smalls.append(rb(s))) for s in ("s1", "s2", "s3")]
    for caller in callers:
        caller.start()
    wait_until(lambda: rb.stats.queue_depth == 15, "the small calls wait at the host too")
    r.rpush("gate", *["go"] * 10)
    for caller in callers:
        caller.join(10)
    blocker.join(10)
    assert json.loads(other_client.communicate(timeout=20)[0]) == large
    batches = ran(r)
    assert sorted(batches[1]) == ["s1", "s2", "s3"], batches  # the batch right after the blocker
    assert sorted(x for batch in batches[2:] for x in batch) == sorted(large)


def test_an_expired_call_fails_at_its_deadline_and_never_reaches_the_model(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    start_host("gated")
    rb = remote()
    blocker = hold_the_model(rb, r)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        rb("late", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    r.rpush("gate", "go", "go")
    blocker.join(10)
    assert rb("after") == "after"
    wait_until(lambda: rb.stats.expired == 1, "the host counts the expired item")
    assert "late" not in [x for batch in ran(r) for x in batch]
    assert rb.stats.client.expired == 1


def test_a_call_that_expired_in_redis_is_settled_unrun_by_a_late_host(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    rb = remote()
    with pytest.raises(DeadlineExceeded, match="is a host serving it"):
        rb("nobody", timeout=0.2)
    assert r.xlen("microbatch:t:requests") == 1
    start_host("recorded")
    wait_until(lambda: r.xlen("microbatch:t:requests") == 0, "the late host settles the entry")
    wait_until(lambda: sum(h.expired_unrun for h in rb.stats.hosts.values()) == 1, "the host reports it unrun")
    assert rb.stats.expired == 1
    assert ran(r, "recorded") == []
    assert r.get("microbatch:t:waiting") == b"0"


def test_cancelling_acall_drops_the_item_queued_at_the_host(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    start_host("gated")
    rb = remote()
    blocker = hold_the_model(rb, r)

    async def main() -> None:
        task = asyncio.ensure_future(rb.acall("victim"))
        while rb.stats.queue_depth != 1:  # polls until the host holds it; wait_for bounds the whole
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    wait_until(lambda: rb.stats.cancelled == 1, "the host drops the cancelled item")
    r.rpush("gate", "go")
    blocker.join(10)
    assert "victim" not in [x for batch in ran(r) for x in batch]
    assert rb.stats.client.cancelled == 1
    wait_until(lambda: r.get("microbatch:t:waiting") == b"0", "the waiting count returns to zero")


def test_cancelling_amap_before_any_host_reads_it_deletes_the_entry(remote: Callable[..., Any], r: redis.Redis) -> None:
    rb = remote()

    async def main() -> None:
        task = asyncio.ensure_future(rb.amap(["a", "b"]))
        while r.xlen("microbatch:t:requests") != 1:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    wait_until(lambda: r.xlen("microbatch:t:requests") == 0, "the entry is deleted")
    assert r.get("microbatch:t:waiting") == b"0"


def test_past_max_queue_size_calls_are_refused_at_once_and_nothing_is_enqueued(
    remote: Callable[..., Any], r: redis.Redis
) -> None:
    rb = remote(max_queue_size=5)
    other = remote(max_queue_size=5)

    async def main() -> None:
        waiting = asyncio.ensure_future(other.amap(["a", "b", "c"]))
        while r.get("microbatch:t:waiting") != b"3":
            await asyncio.sleep(0.005)
        with pytest.raises(Overloaded) as refused:
            await rb.amap(["d", "e", "f"])
        assert refused.value.retry_after > 0
        assert r.xlen("microbatch:t:requests") == 1 and r.get("microbatch:t:waiting") == b"3"
        waiting.cancel()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert rb.stats.client.rejected == 3 and rb.stats.client.submitted == 0


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(True, TypeError), ("1", TypeError), (-1, ValueError), (0, ValueError), (float("nan"), ValueError)],
)
def test_a_bad_per_call_timeout_is_refused_like_a_local_batchers_and_nothing_is_sent(
    remote: Callable[..., RemoteBatcher[Any, Any]], r: redis.Redis, timeout: Any, error: type[Exception]
) -> None:
    rb = remote()
    with pytest.raises(error, match="timeout"):
        rb("x", timeout=timeout)
    assert rb.stats.client.submitted == 0
    assert r.keys("microbatch:*:requests") == []
