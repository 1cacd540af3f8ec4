"""The client's two paths to a host, and its async deadlines.

A lone call from a thread sends its admission and a BLPOP on the link's lone reply key in one write
and takes its reply itself; calls made while another is in flight queue for the sender thread and
get their replies through the listener. Async calls on one event loop share one deadline timer.
Real Redis, real host processes (``gated`` holds the model until the test pushes to ``gate``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from microbatch import BatcherClosed, DeadlineExceeded, Overloaded
from microbatch.remote import RemoteBatcher, _deadlines
from microbatch.remote._link import Link
from tests._support import wait_until


def link_of(rb: RemoteBatcher[Any, Any]) -> Link:
    rb.start()
    link = rb._link
    assert link is not None
    return link


def lone_caller_waiting(link: Link) -> bool:
    return link._direct_busy


def ran(r: redis.Redis) -> list[list[Any]]:
    return [json.loads(batch) for batch in r.lrange("ran:gated", 0, -1)]


def test_a_lone_call_takes_its_own_reply_and_a_call_made_meanwhile_goes_through_the_sender(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    start_host("gated")
    rb = remote()
    link = link_of(rb)
    results: dict[str, Any] = {}
    lone = threading.Thread(target=lambda: results.update(lone=rb("lone")))
    lone.start()
    wait_until(lambda: ran(r) == [["lone"]], "the lone call is inside the model")
    assert lone_caller_waiting(link) and link._send_channel.round_trips == 0

    queued = threading.Thread(target=lambda: results.update(queued=rb("queued")))
    queued.start()  # another call is in flight: this one queues for the sender
    wait_until(lambda: link._send_channel.round_trips == 1, "the sender sent the second call")
    r.rpush("gate", "go", "go")
    lone.join(10)
    queued.join(10)
    assert results == {"lone": "lone", "queued": "queued"}
    assert not lone_caller_waiting(link) and r.llen(link.direct_key) == 0


def test_a_late_reply_to_a_lone_call_that_gave_up_is_not_taken_for_the_next_ones(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    start_host("gated")
    rb = remote()
    link = link_of(rb)
    with pytest.raises(DeadlineExceeded):
        rb("gave up", timeout=1.0)  # it enters the model, which holds it past its deadline
    assert ran(r) == [["gave up"]]
    r.rpush("gate", "go")
    wait_until(lambda: r.llen(link.direct_key) == 1, "the late reply waits on the lone reply key")
    r.rpush("gate", "go")
    assert rb("next") == "next"  # pops the late reply first, drops it, then takes its own
    assert r.llen(link.direct_key) == 0
    assert rb.client_stats().expired == 1 and rb.client_stats().completed == 1


def test_a_refused_lone_call_does_not_wait_for_its_blpop(remote: Callable[..., Any], r: redis.Redis) -> None:
    rb = remote(max_queue_size=1)
    link = link_of(rb)
    started = time.monotonic()
    with pytest.raises(Overloaded):
        rb.map(["a", "b"], timeout=10)
    # The BLPOP written behind the admission is woken, not left to run out its one-second block.
    assert time.monotonic() - started < 0.9
    assert r.xlen("microbatch:t:requests") == 0 and r.llen(link.direct_key) == 0
    assert not lone_caller_waiting(link) and rb.client_stats().rejected == 2


def test_close_without_drain_frees_a_lone_caller_blocked_on_its_reply(remote: Callable[..., Any]) -> None:
    rb = remote()
    link = link_of(rb)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            rb("nobody serves this", timeout=20)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: lone_caller_waiting(link) and any(c.entry_id for c in list(link._calls.values())),
               "the lone call is admitted and its caller waits on the lone reply key")
    rb.close(drain=False)
    caller.join(5)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], BatcherClosed)


def test_lone_and_queued_calls_recover_when_redis_forgets_the_scripts(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis
) -> None:
    start_host("echo")
    rb = remote()
    assert rb("before")[0] == "before"
    r.script_flush()
    assert rb("lone")[0] == "lone"  # NOSCRIPT: the lone path ends its BLPOP, loads the script, sends again
    r.script_flush()

    async def queued() -> list[Any]:
        return await asyncio.gather(*(rb.acall(i) for i in range(8)))

    assert [result[0] for result in asyncio.run(queued())] == list(range(8))


def test_async_calls_on_one_loop_expire_each_at_its_own_deadline_and_leave_no_timer_behind(
    remote: Callable[..., Any],
) -> None:
    rb = remote()  # no host: every call waits for its deadline

    async def main() -> None:
        later = asyncio.ensure_future(rb.acall("later", timeout=0.6))  # starts first: the timer is set for it
        sooner = asyncio.ensure_future(rb.acall("sooner", timeout=0.2))  # an earlier deadline moves the timer
        patient = asyncio.ensure_future(rb.acall("patient", timeout=30))
        done, _ = await asyncio.wait([later, sooner, patient], return_when=asyncio.FIRST_COMPLETED)
        assert done == {sooner}
        with pytest.raises(DeadlineExceeded):
            sooner.result()
        with pytest.raises(DeadlineExceeded):
            await later
        assert not patient.done()
        patient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await patient

    asyncio.run(asyncio.wait_for(main(), 10))
    assert _deadlines._by_loop == {}  # the loop is gone: so is its entry
    stats = rb.client_stats()
    assert (stats.expired, stats.cancelled) == (2, 1)


def test_settled_calls_leave_a_loops_deadline_heap_without_waiting_for_their_deadlines() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        expired: list[str] = []
        fired: asyncio.Future[None] = loop.create_future()

        def expire(name: str) -> None:
            expired.append(name)
            fired.set_result(None)

        deadlines = _deadlines.deadlines_of(loop)
        pending: asyncio.Future[Any] = loop.create_future()
        deadlines.add(time.monotonic() + 0.2, pending, expire, "pending")
        for i in range(1000):  # calls that settle long before their deadline, as under load
            future: asyncio.Future[Any] = loop.create_future()
            deadlines.add(time.monotonic() + 30, future, expire, f"settled {i}")
            future.set_result(b"")
            deadlines.done()
            assert len(deadlines._heap) <= 2 * 2 + 64 + 1  # settled entries are swept out as calls come
        await fired
        assert expired == ["pending"]
        pending.set_result(b"")
        deadlines.done()
        assert _deadlines._by_loop == {}

    asyncio.run(asyncio.wait_for(main(), 10))
