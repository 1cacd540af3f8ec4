"""Several batches in flight: ``max_concurrent_batches`` (an async function's event loop runs that many
batches at once; a sync function gets that many worker threads) and replicas (``Batcher([fn0, fn1])``,
one worker per replica, one shared queue, priority and stats).

Overlap is shown with gates that hold each batch inside the batch function until the test releases
it: a test waits until k batches are held *at the same time*, which cannot happen with one batch in
flight. Every existing guarantee is checked again with several in flight: each item resolved once,
isolation per batch, close waiting for every batch, ``running`` counting all of them, fork safety.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from microbatch import Batcher, DeadlineExceeded


def test_an_async_function_runs_up_to_max_concurrent_batches_at_once_and_running_counts_them_all(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(is_async=True)
    b = make_batcher(gate, max_batch_size=2, max_wait_ms=0, max_concurrent_batches=3, name="overlap")
    calls = [spawn(b, i) for i in range(6)]

    # Three batches inside the function at once: impossible with one batch in flight.
    wait_until(lambda: gate.blocked == 3, "three batches are held in the gate together")
    assert b.stats.running == sum(gate.sizes) == 6 - b.stats.queue_depth
    assert len(set(gate.loops)) == 1, "all on the worker's one event loop"

    gate.open()
    assert [call.result() for call in calls] == [("out", i) for i in range(6)]
    stats = b.stats
    assert (stats.running, stats.completed, stats.in_flight) == (0, 6, 0)


def test_a_freed_slot_takes_the_next_batch_while_the_others_still_run(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, wait_until: Any
) -> None:
    gate = make_gate(is_async=True)
    b = make_batcher(gate, max_batch_size=1, max_wait_ms=0, max_concurrent_batches=2, name="refill")
    first, second = spawn(b, "a"), spawn(b, "b")
    wait_until(lambda: gate.blocked == 2, "both slots are taken")
    third = spawn(b, "c")
    queued(b, 1)  # no free slot: it waits in the queue

    gate.release()  # one batch ends; "c" starts beside the one still held
    wait_until(lambda: len(gate.calls) == 3 and gate.blocked == 2, "the freed slot took the queued item")
    assert sorted(gate.sizes) == [1, 1, 1] and b.stats.running == 2
    gate.open()
    assert [first.result(), second.result(), third.result()] == [("out", "a"), ("out", "b"), ("out", "c")]


def test_the_default_is_one_batch_in_flight(make_batcher: Any, make_gate: Any, spawn: Any, queued: Any) -> None:
    gate = make_gate(is_async=True)
    b = make_batcher(gate, max_batch_size=1, max_wait_ms=0, name="one-at-a-time")
    assert b.max_concurrent_batches == 1
    first = spawn(b, "a")
    gate.wait_blocked()
    second = spawn(b, "b")
    queued(b, 1)
    assert (gate.blocked, b.stats.running) == (1, 1)
    gate.open()
    assert (first.result(), second.result()) == (("out", "a"), ("out", "b"))


def test_a_sync_function_gets_one_worker_thread_per_concurrent_batch(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate()
    b = make_batcher(gate, max_batch_size=1, max_wait_ms=0, max_concurrent_batches=2, name="threads")
    calls = [spawn(b, "a"), spawn(b, "b")]
    wait_until(lambda: gate.blocked == 2, "two batches are held at once")
    assert sorted(gate.threads) == ["microbatch-threads-0", "microbatch-threads-1"]
    gate.open()
    assert sorted(call.result() for call in calls) == [("out", "a"), ("out", "b")]


def test_replicas_share_one_queue_and_each_takes_a_batch_when_free(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, wait_until: Any
) -> None:
    gpu0, gpu1 = make_gate(), make_gate()
    b = make_batcher([gpu0, gpu1], max_batch_size=1, max_wait_ms=0, name="replicas")
    assert b.name == "replicas" and b.max_concurrent_batches == 1
    held = [spawn(b, "a"), spawn(b, "b")]
    wait_until(lambda: gpu0.blocked + gpu1.blocked == 2, "both replicas hold a batch")
    assert (gpu0.blocked, gpu1.blocked) == (1, 1), "each replica runs one batch at a time"
    assert {gpu0.threads[0], gpu1.threads[0]} == {"microbatch-replicas-0", "microbatch-replicas-1"}

    # Both replicas are busy: new work queues, in priority order, for whichever replica frees first.
    rest = [spawn(b, "c"), spawn(b, "d")]
    queued(b, 2)
    assert b.stats.running == 2
    gpu1.open()
    assert [call.result() for call in rest] == [("out", "c"), ("out", "d")]
    gpu0.open()
    assert sorted(call.result() for call in held) == [("out", "a"), ("out", "b")]
    assert sorted(gpu0.items + gpu1.items) == ["a", "b", "c", "d"]
    stats = b.stats
    assert (stats.completed, stats.batches, stats.running) == (4, len(gpu0.calls) + len(gpu1.calls), 0)


def test_a_failing_replica_fails_only_the_batch_it_ran_and_keeps_serving(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    def broken(items: list[Any]) -> list[Any]:
        raise RuntimeError("CUDA error on gpu1")

    good, bad = make_gate(), make_gate(broken)
    b = make_batcher([good, bad], max_batch_size=1, max_wait_ms=0, name="one-bad-replica")
    for round_ in range(2):  # the second round shows that both replicas still serve
        first = spawn(b, f"x{round_}")
        wait_until(lambda: good.blocked + bad.blocked == 1, "one replica holds the first call")
        second = spawn(b, f"y{round_}")  # the busy replica cannot take it: the other one does
        wait_until(lambda: good.blocked == bad.blocked == 1, "the other replica holds the second call")
        good.release()
        bad.release()
        on_good, on_bad = (first, second) if good.items[-1] == f"x{round_}" else (second, first)
        assert on_good.result() == ("out", good.items[-1])
        with pytest.raises(RuntimeError, match="CUDA error on gpu1"):
            on_bad.result()
    assert (b.stats.completed, b.stats.failed, len(good.calls), len(bad.calls)) == (2, 2, 2, 2)


def test_close_waits_for_every_batch_in_flight(
    make_batcher: Any, make_gate: Any, spawn: Any, wait_until: Any
) -> None:
    gate = make_gate(is_async=True)
    b = make_batcher(gate, max_batch_size=1, max_wait_ms=0, max_concurrent_batches=2, name="drain-all")
    calls = [spawn(b, "a"), spawn(b, "b"), spawn(b, "c")]
    wait_until(lambda: gate.blocked == 2 and b.stats.queue_depth == 1, "two running, one queued")

    closer = spawn(b.close)
    wait_until(lambda: b.closed, "close has begun")
    gate.open()
    closer.result()
    # When close returns, every batch that was in flight (and the drained one) has delivered.
    assert all(call.done.is_set() for call in calls)
    assert sorted(call.result() for call in calls) == [("out", "a"), ("out", "b"), ("out", "c")]
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("microbatch-drain-all"))


def test_aclose_waits_for_every_replica(make_batcher: Any, make_gate: Any, loop_thread: Any, wait_until: Any) -> None:
    gpu0, gpu1 = make_gate(), make_gate()
    b = make_batcher([gpu0, gpu1], max_batch_size=1, max_wait_ms=0, name="aclose-replicas")
    calls = [loop_thread.start(b.acall("a")), loop_thread.start(b.acall("b"))]
    wait_until(lambda: gpu0.blocked == gpu1.blocked == 1, "both replicas hold a batch")
    closing = loop_thread.start(b.aclose())
    gpu0.open()
    calls[0 if gpu0.items == ["a"] else 1].wait()
    assert not closing.done.is_set(), "aclose returned while a replica still held a batch"
    gpu1.open()
    closing.result()
    assert all(call.done.is_set() for call in calls)
    assert sorted(call.result() for call in calls) == [("out", "a"), ("out", "b")]
    assert repr(b).startswith("<Batcher 'aclose-replicas' closed")


def test_on_worker_start_runs_once_on_each_replicas_thread(make_batcher: Any, make_gate: Any, wait_until: Any) -> None:
    started: list[str] = []
    lock = threading.Lock()

    def note() -> None:
        with lock:
            started.append(threading.current_thread().name)

    b = make_batcher([make_gate(open=True), make_gate(open=True)], name="hooked-replicas", on_worker_start=note)
    assert b(1) == ("out", 1)
    wait_until(lambda: len(started) == 2, "both replica threads ran the hook")
    assert sorted(started) == ["microbatch-hooked-replicas-0", "microbatch-hooked-replicas-1"]


@pytest.mark.parametrize(
    ("fn", "options", "error", "match"),
    [
        ([], {}, ValueError, "empty list of replicas"),
        ([lambda xs: xs, 42], {}, TypeError, r"callable batch function \(replica 1\)"),
        ("fn-mix", {}, TypeError, "all sync or all `async def`"),
        (lambda xs: xs, {"max_concurrent_batches": 0}, ValueError, "max_concurrent_batches must be an integer >= 1"),
        (lambda xs: xs, {"max_concurrent_batches": True}, ValueError, "max_concurrent_batches"),
    ],
    ids=["empty", "not-callable", "mixed", "zero", "bool"],
)
def test_bad_replicas_and_concurrency_are_refused_saying_what_to_pass(
    fn: Any, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    if fn == "fn-mix":
        async def async_replica(items: list[Any]) -> list[Any]:
            return items

        fn = [lambda xs: xs, async_replica]
    with pytest.raises(error, match=match):
        Batcher(fn, **options)


def test_every_item_is_resolved_once_with_batches_overlapping_timeouts_and_cancellations(
    make_batcher: Any, loop_thread: Any
) -> None:
    """A soak: 300 calls through 4 concurrent batches of an I/O-bound async function, a third of them
    given up (a timeout shorter than the work, or cancelled): everyone gets its own outcome."""
    rng = random.Random(7)

    async def io_bound(items: list[int]) -> list[tuple[str, int]]:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)  # yield to the other batches in flight
        return [("out", x) for x in items]

    b = make_batcher(io_bound, max_batch_size=8, max_wait_ms=0, max_concurrent_batches=4, name="soak")

    async def one(i: int) -> Any:
        try:
            if i % 3 == 1:
                return await b.acall(i, timeout=1e-4)
            return await b.acall(i)
        except DeadlineExceeded:
            return "expired"

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(one(i)) for i in range(300)]
        await asyncio.sleep(0)  # one loop turn: every task has submitted its call and awaits it
        for task in tasks[2::9]:
            task.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = loop_thread.run(main())
    for i, result in enumerate(results):
        assert result in (("out", i), "expired") or isinstance(result, asyncio.CancelledError), (i, result)
    b.close()
    stats = b.stats
    assert stats.submitted == 300 and stats.in_flight == 0 and stats.running == 0
    answered = sum(r == ("out", i) for i, r in enumerate(results))
    given_up = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert stats.expired == results.count("expired") and given_up == len(range(2, 300, 9))
    # A task cancelled after its result was decided counts as completed: each item is counted once.
    assert stats.completed + stats.cancelled == answered + given_up and stats.completed >= answered


def test_a_forked_child_gets_fresh_replicas_and_concurrent_workers(tmp_path: Path) -> None:
    script = """
        import asyncio, os
        from microbatch import Batcher

        async def remote(items):
            await asyncio.sleep(0)
            return [x + 1 for x in items]

        replicas = Batcher([lambda xs: [x * 2 for x in xs], lambda xs: [x * 2 for x in xs]], name="replicas")
        concurrent = Batcher(remote, max_concurrent_batches=4, name="concurrent")
        assert replicas(1) == 2 and concurrent(1) == 2

        pid = os.fork()
        if pid == 0:
            try:
                assert replicas.map(list(range(50)), timeout=30) == [x * 2 for x in range(50)]
                assert concurrent.map(list(range(50)), timeout=30) == [x + 1 for x in range(50)]
                replicas.close()
                concurrent.close()
            except BaseException as exc:
                print("child:", repr(exc), flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert replicas(3) == 6 and concurrent(3) == 4
        print("child exit code", os.waitstatus_to_exitcode(status))
    """
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "child exit code 0", run.stdout
