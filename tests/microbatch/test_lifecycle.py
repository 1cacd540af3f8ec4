"""Lifecycle: closing with and without draining, ``aclose`` and the context managers, the named
daemon worker thread that never blocks interpreter exit, the refusal of blocking calls made from
the worker itself, and batchers used in a forked child."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import microbatch
from microbatch import Batcher, BatcherClosed


def worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"microbatch-{name}"]


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_close_with_drain_runs_what_is_queued_and_refuses_new_calls(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, loop_thread: Any, wait_until: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="drain")
    blocker = hold(b, gate)
    single = spawn(b, "single")
    bulk = spawn(b.map, ["m0", "m1"])
    coro = loop_thread.start(b.acall("async"))
    queued(b, 4)

    closer = spawn(b.close)  # drain=True is the default; close() returns once the worker has exited
    wait_until(lambda: b.closed, "the batcher is closing")
    with pytest.raises(BatcherClosed):
        b("too late")
    with pytest.raises(BatcherClosed):
        loop_thread.run(b.amap(["too", "late"]))
    assert b.stats.rejected == 3
    assert not closer.done.is_set(), "close() waits for the queued items to run"
    gate.open()

    assert blocker.result() == ("out", "blocker")
    assert single.result() == ("out", "single")
    assert bulk.result() == [("out", "m0"), ("out", "m1")]
    assert coro.result() == ("out", "async")
    closer.result()
    assert worker_threads("drain") == []
    assert "too late" not in gate.items


def test_close_with_drain_does_not_wait_out_max_wait_ms_for_a_partial_batch(
    make_batcher: Any, make_gate: Any, spawn: Any, queued: Any, fake_clock: Any
) -> None:
    """A draining close runs what is queued now; on the frozen clock the minute would never pass."""
    gate = make_gate(open=True)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=60_000, name="drain-now")
    lone = spawn(b, "lone")
    queued(b, 1)

    b.close()

    assert lone.result() == ("out", "lone")
    assert gate.calls == [["lone"]]


def test_close_without_drain_fails_queued_callers_with_batcher_closed_at_once(
    make_batcher: Any, gate: Any, spawn: Any, queued: Any, loop_thread: Any, hold: Any
) -> None:
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="no-drain")
    blocker = hold(b, gate)
    single = spawn(b, "single")
    bulk = spawn(b.map, ["m0", "m1"])
    coro = loop_thread.start(b.acall("async"))
    queued(b, 4)

    closer = spawn(b.close, drain=False)
    # The gate is still closed: the queued callers are failed without waiting for the running batch.
    assert isinstance(single.exception(), BatcherClosed)
    assert isinstance(bulk.exception(), BatcherClosed)
    assert isinstance(coro.exception(), BatcherClosed)
    stats = b.stats
    assert (stats.queue_depth, stats.cancelled) == (0, 4)
    gate.open()

    assert blocker.result() == ("out", "blocker"), "the batch already running still completes"
    closer.result()
    assert gate.calls == [["blocker"]]
    assert worker_threads("no-drain") == []


@pytest.mark.parametrize("drain", [True, False])
def test_aclose_waits_for_the_worker_without_blocking_the_event_loop(
    make_batcher: Any, gate: Any, queued: Any, loop_thread: Any, wait_until: Any, drain: bool, hold: Any
) -> None:
    b = make_batcher(gate, max_wait_ms=0, name=f"aclose-{drain}")
    blocker = hold(b, gate)

    async def scenario() -> Any:
        queued_call = asyncio.create_task(b.acall("queued"))
        await asyncio.to_thread(queued, b, 1)
        closing = asyncio.create_task(b.aclose(drain=drain))
        # This loop stays free while aclose waits: it can run the thread hop below and come back.
        await asyncio.to_thread(wait_until, lambda: b.closed, "aclose began")
        assert not closing.done()
        gate.open()
        await closing
        return await asyncio.gather(queued_call, return_exceptions=True)

    (outcome,) = loop_thread.run(scenario())
    if drain:
        assert outcome == ("out", "queued")
    else:
        assert isinstance(outcome, BatcherClosed)
    assert blocker.result() == ("out", "blocker")
    # aclose returns once the worker has finished its last step; its thread object ends right after.
    wait_until(lambda: worker_threads(f"aclose-{drain}") == [], "the worker thread ended")


def test_the_context_managers_close_the_batcher_on_exit(make_gate: Any, loop_thread: Any, wait_until: Any) -> None:
    gate = make_gate(open=True)

    with Batcher(gate, name="with") as b:
        assert b(1) == ("out", 1)
    assert b.closed
    assert worker_threads("with") == []

    async def use() -> Any:
        async with Batcher(gate, name="async-with") as ab:
            result = await ab.acall(2)
        return ab, result

    ab, result = loop_thread.run(use())
    assert result == ("out", 2)
    assert ab.closed
    wait_until(lambda: worker_threads("async-with") == [], "the worker thread ended")
    with pytest.raises(BatcherClosed):
        ab(3)


def test_close_is_idempotent_and_a_closed_batcher_cannot_be_started(make_gate: Any, loop_thread: Any) -> None:
    never_started = Batcher(make_gate(open=True), name="never-started")
    never_started.close()
    never_started.close()
    loop_thread.run(never_started.aclose())
    assert never_started.closed
    with pytest.raises(BatcherClosed, match="never-started"):
        never_started.start()
    with pytest.raises(BatcherClosed):
        never_started(1)


def test_the_worker_is_a_daemon_thread_named_after_the_batcher_started_lazily(
    make_batcher: Any, make_gate: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="lazy-embed")
    assert worker_threads("lazy-embed") == [], "no thread until the first call or start()"

    b.start()
    (worker,) = worker_threads("lazy-embed")
    assert worker.daemon
    b(1)
    assert gate.threads == ["microbatch-lazy-embed"]
    assert not hasattr(Batcher, "__del__"), "closing is explicit: no __del__ magic"


def test_the_default_name_is_the_batch_functions_qualified_name(make_batcher: Any) -> None:
    def embed_texts(texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    b = make_batcher(embed_texts)
    assert b.name == embed_texts.__qualname__
    assert b("abc") == 3
    assert len(worker_threads(embed_texts.__qualname__)) == 1


def test_a_forgotten_batcher_does_not_block_interpreter_exit(tmp_path: Path) -> None:
    """Never closed, one idle, one with a caller stuck in its batch function: the process still exits."""
    run = run_script(
        """
        import asyncio, threading
        from microbatch import Batcher

        idle = Batcher(lambda items: items, name="idle")
        assert idle(1) == 1

        async def embed(items):
            return items
        idle_async = Batcher(embed, name="idle-async")
        assert idle_async(2) == 2

        stuck = Batcher(lambda items: threading.Event().wait(), name="stuck")
        threading.Thread(target=stuck, args=(3,), daemon=True).start()
        print("main thread done", flush=True)
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "main thread done"


def test_a_blocking_call_from_inside_the_batch_function_raises_runtime_error_saying_to_await(
    make_batcher: Any,
) -> None:
    """The worker would wait on itself forever; it refuses instead, naming the async method to await."""
    holder: dict[str, Any] = {}

    def reentrant(items: list[Any]) -> list[Any]:
        b = holder["b"]
        out = []
        calls: list[Callable[[], Any]] = [lambda: b("inner"), lambda: b.map(["inner"])]
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                out.append(str(exc))
        return [out for _ in items]

    holder["b"] = b = make_batcher(reentrant, name="reentrant")
    call_error, map_error = b("outer")

    assert "await acall()" in call_error
    assert "await amap()" in map_error
    assert b.stats.submitted == 1, "the refused calls enqueued nothing"


def test_calls_from_inside_an_async_batch_function_raise_runtime_error_instead_of_deadlocking(
    make_batcher: Any,
) -> None:
    holder: dict[str, Any] = {}

    async def reentrant(items: list[Any]) -> list[Any]:
        b = holder["b"]
        out = []
        attempts: list[Callable[[], Any]] = [lambda: b("inner"), lambda: b.acall("inner"), lambda: b.amap(["inner"])]
        for attempt in attempts:
            try:
                result = attempt()
                if asyncio.iscoroutine(result):
                    await result
            except RuntimeError as exc:
                out.append(str(exc))
        return [out for _ in items]

    holder["b"] = b = make_batcher(reentrant, name="async-reentrant")
    errors = b("outer")

    assert len(errors) == 3
    assert "await acall()" in errors[0]
    assert all("own worker" in e for e in errors)


def test_close_from_inside_the_batch_function_does_not_deadlock(make_batcher: Any, wait_until: Any) -> None:
    holder: dict[str, Any] = {}

    def closes_its_batcher(items: list[Any]) -> list[Any]:
        holder["b"].close()
        return [("out", x) for x in items]

    holder["b"] = b = make_batcher(closes_its_batcher, name="self-closing")

    assert b("last") == ("out", "last")
    assert b.closed
    with pytest.raises(BatcherClosed):
        b("after")
    wait_until(lambda: worker_threads("self-closing") == [], "the worker exits")


def test_a_forked_child_can_use_batchers_created_and_started_in_the_parent(tmp_path: Path) -> None:
    run = run_script(
        """
        import os
        from microbatch import Batcher, BatcherClosed

        async def triple(items):
            return [x * 3 for x in items]

        double = Batcher(lambda items: [x * 2 for x in items], name="double")
        tripled = Batcher(triple, name="triple")
        closed = Batcher(lambda items: items, name="closed")
        assert double(1) == 2 and tripled(1) == 3  # both workers run in the parent
        closed.close()

        pid = os.fork()
        if pid == 0:
            try:
                assert double(21, timeout=30) == 42
                assert double.map([1, 2], timeout=30) == [2, 4]
                assert tripled(2, timeout=30) == 6
                try:
                    closed(1)
                except BatcherClosed:
                    pass
                else:
                    raise AssertionError("a batcher closed in the parent is open in the child")
                double.close()
                tripled.close()
            except BaseException as exc:
                print("child:", repr(exc), flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert double(2) == 4 and tripled(2) == 6, "the parent's batchers are unaffected"
        print("child exit code", os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "child exit code 0", run.stdout


def test_on_worker_start_runs_once_on_the_worker_thread_before_its_first_batch(
    make_batcher: Any, make_gate: Any
) -> None:
    gate = make_gate(open=True)
    started: list[tuple[str, int]] = []
    b = make_batcher(gate, name="hooked", on_worker_start=lambda: started.append(
        (threading.current_thread().name, len(gate.calls))
    ))
    assert started == [], "the hook waits for the worker to start"
    assert [b(1), b(2)] == [("out", 1), ("out", 2)]
    assert started == [("microbatch-hooked", 0)]
    assert b.on_worker_start is not None


def test_on_worker_start_runs_on_an_async_functions_worker_too(make_batcher: Any, loop_thread: Any) -> None:
    started: list[str] = []

    async def embed(items: list[int]) -> list[int]:
        return [x * 2 for x in items]

    def hook() -> None:
        started.append(threading.current_thread().name)

    b = make_batcher(embed, name="hooked-async", on_worker_start=hook)
    assert loop_thread.run(b.acall(3)) == 6
    assert started == ["microbatch-hooked-async"]


def test_a_failing_on_worker_start_is_logged_and_the_worker_serves_anyway(
    make_batcher: Any, make_gate: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_setup() -> None:
        raise RuntimeError("no such runtime setting")

    b = make_batcher(make_gate(open=True), name="bad-hook", on_worker_start=broken_setup)
    with caplog.at_level("ERROR", logger="microbatch"):
        assert b(5) == ("out", 5)
    assert "on_worker_start of batcher 'bad-hook' raised" in caplog.text
    assert "no such runtime setting" in caplog.text


def test_on_worker_start_must_be_callable(make_gate: Any) -> None:
    with pytest.raises(TypeError, match="on_worker_start must be a function taking no arguments"):
        Batcher(make_gate(open=True), on_worker_start="torch.set_num_threads")  # type: ignore[call-overload]


def test_methods_pass_on_worker_start_to_each_instances_batcher() -> None:
    started: list[str] = []

    class Model:
        @microbatch.batch(max_batch_size=4, on_worker_start=lambda: started.append(threading.current_thread().name))
        def embed(self, items: list[int]) -> list[int]:
            return items

    model = Model()
    assert model.embed(7) == 7
    assert started == [f"microbatch-{model.embed.name}"]
    model.embed.close()
