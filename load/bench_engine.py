"""Benchmark the microbatch engine against a direct call under a lock and the ``batched`` package.

Run from the repository root::

    .venv/bin/python load/bench_engine.py             # full run, under 4 minutes on 2 cores
    .venv/bin/python load/bench_engine.py --quick     # smoke run, under a minute
    .venv/bin/python load/bench_engine.py --markdown  # print the tables as Markdown

Everything runs in one process and one run. Contenders, each given the same batch function:

* ``direct``: ``fn([x])`` (or ``fn(items)`` for a map) under a ``threading.Lock``: no batching.
* ``microbatch``: :class:`microbatch.Batcher` with its defaults (``max_batch_size=32``, adaptive wait).
* ``batched``: the ``batched`` package (0.1.5) with its defaults (``batch_size=32``,
  ``timeout_ms=5``): ``batched.BatchProcessor`` for threads, ``batched.aio.AsyncBatchProcessor``
  for asyncio, the latter given an ``async def`` wrapper of the function so that it skips the
  ``asyncio.to_thread`` hop it adds to a sync function (its best case; the no-op never blocks).
* ``offline 32`` (model scenarios only): the model's ceiling, the batch function on batches of 32
  back to back from one thread; its p50 is the run time of one full batch. With 16 callers,
  ``offline 16`` also runs: batches of 16, the most 16 closed-loop callers can ever fill.

Scenarios: a no-op function at 1, 8 and 64 closed-loop callers (threads, and tasks on one event
loop); the packaged MiniLM model at 16 and 64 caller threads, as a share of the ceiling; a lone
caller starting a call every 1 ms (added latency over a direct call); and a mixed load of paced
single-item callers beside closed-loop callers of 64-item maps.

Measuring: every contender of a scenario runs once per round, in turn, for several rounds, and its
rounds are pooled, so a burst of other work on a shared machine lands on all of them alike. Each run
has a warm-up, then a fixed window: throughput counts items whose call completed inside the window,
latency percentiles cover the calls that overlap it. Sleeping here only paces the load generator;
nothing waits on a sleep for correctness.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import itertools
import math
import os
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import batched
import batched.aio

from microbatch import Batcher

BATCH = 32  # every contender's maximum batch size, and the ceiling's batch
MAP_SIZE = 64
NO_OP_CALLERS = (1, 8, 64)
MODEL_CALLERS = (16, 64)
MIXED_SINGLES, MIXED_BULK = 8, 4
SCENARIOS = ("no-op", "lone", "threads", "mixed")

Fn = Callable[[list[Any]], Any]  # a list of items -> one output per item (a list, an array...)
AsyncCall = Callable[[Any], Awaitable[Any]]


# ---------------------------------------------------------------------------------------- contenders


class Contender(abc.ABC):
    """One way of serving ``fn`` to many callers; a fresh one is made for every run."""

    name: ClassVar[str]

    @abc.abstractmethod
    def __init__(self, fn: Fn) -> None: ...

    @abc.abstractmethod
    def call(self, item: Any) -> Any: ...

    @abc.abstractmethod
    def map(self, items: list[Any]) -> Any: ...

    @abc.abstractmethod
    def bind_loop(self) -> AsyncCall:
        """An async single-item call for the running event loop (called inside it, once per caller)."""

    @abc.abstractmethod
    def counters(self) -> tuple[int, int]:
        """Items run and calls of ``fn`` so far, for the mean batch size over a window."""

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default: Direct has no worker to release
        """Release the contender's worker, if it has one."""


class Direct(Contender):
    """No batching: each request calls ``fn`` itself, one at a time under a lock."""

    name = "direct"

    def __init__(self, fn: Fn) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._items = self._calls = 0

    def map(self, items: list[Any]) -> Any:
        with self._lock:
            out = self._fn(items)
            self._items += len(items)
            self._calls += 1
        return out

    def call(self, item: Any) -> Any:
        return self.map([item])[0]

    def bind_loop(self) -> AsyncCall:
        async def acall(item: Any) -> Any:
            return self.call(item)

        return acall

    def counters(self) -> tuple[int, int]:
        return self._items, self._calls


class Engine(Contender):
    """microbatch with its defaults; with the model, its worker runs the example's ``on_worker_start``."""

    name = "microbatch"
    on_worker_start: ClassVar[Callable[[], None] | None] = None  # set once the model is loaded

    def __init__(self, fn: Fn) -> None:
        self._b: Batcher[Any, Any] = Batcher(
            fn, max_batch_size=BATCH, name="bench", on_worker_start=type(self).on_worker_start
        )

    def call(self, item: Any) -> Any:
        return self._b(item)

    def map(self, items: list[Any]) -> Any:
        return self._b.map(items)

    def bind_loop(self) -> AsyncCall:
        return self._b.acall

    def counters(self) -> tuple[int, int]:
        stats = self._b.stats
        return sum(size * count for size, count in stats.batch_sizes.items()), stats.batches

    def close(self) -> None:
        self._b.close()


class Batched(Contender):
    """The ``batched`` package with its defaults; its asyncio processor is bound to one loop, so one per loop."""

    name = "batched"

    def __init__(self, fn: Fn) -> None:
        self._fn = fn
        self._sync = batched.BatchProcessor(fn, batch_size=BATCH)
        self._aio: batched.aio.AsyncBatchProcessor[Any, Any] | None = None

    def call(self, item: Any) -> Any:
        return self._sync(item)

    def map(self, items: list[Any]) -> Any:
        return self._sync(list(items))  # batched treats a list as many items

    def bind_loop(self) -> AsyncCall:
        if self._aio is None:  # a contender serves one run, so one loop
            fn = self._fn

            async def afn(items: list[Any]) -> Any:
                return fn(items)

            self._aio = batched.aio.AsyncBatchProcessor(afn, batch_size=BATCH)
        return cast(AsyncCall, self._aio.__call__)

    def counters(self) -> tuple[int, int]:
        items = calls = 0
        for processor in (self._sync, self._aio):
            if processor is not None:
                stats = processor.stats
                items += stats.total_processed
                calls += stats.total_batches
        return items, calls

    def close(self) -> None:
        self._sync.shutdown()  # the asyncio processor's task ends with its loop


class BareEngine(Engine):
    """microbatch without ``on_worker_start``: the worker keeps whatever torch threads it is given."""

    name = "microbatch, no hook"
    on_worker_start = None


CONTENDERS: tuple[type[Contender], ...] = (Direct, Engine, Batched)


# ---------------------------------------------------------------------------------------- load generation


@dataclass(frozen=True)
class Timing:
    """Each run's warm-up and measured window, in seconds, and how many rounds a scenario runs."""

    warmup: float
    seconds: float
    rounds: int


@dataclass(frozen=True)
class Window:
    """The measured interval, after the warm-up; callers stop starting calls at ``end``."""

    start: float
    end: float

    @classmethod
    def after(cls, timing: Timing) -> Window:
        now = time.perf_counter()
        return cls(now + timing.warmup, now + timing.warmup + timing.seconds)


@dataclass
class Tally:
    """One caller's record: items completed inside the window, latencies of calls overlapping it.

    A call that started during the warm-up but ended inside the window counts, so a caller starved
    through the whole window still reports its wait.
    """

    items: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, window: Window, started: float, finished: float, items: int) -> None:
        if window.start <= finished <= window.end:
            self.items += items
        if finished >= window.start:
            self.latencies.append(finished - started)


class Pacer:
    """Constant-rate starts for one caller, one per ``period`` from ``phase`` seconds on.

    Period 0 is a closed loop that never pauses. Callers of a group get phases spread over one
    period, so paced callers arrive spread out rather than in lockstep.
    """

    def __init__(self, period: float, phase: float) -> None:
        self._period = period
        self._next = time.perf_counter() + phase

    def pause(self) -> float:
        """Seconds to wait before the next call starts."""
        if not self._period:
            return 0.0
        now = time.perf_counter()
        wait = self._next - now
        self._next = max(self._next, now) + self._period  # running late: no catch-up burst
        return max(wait, 0.0)


@dataclass(frozen=True)
class Group:
    """``callers`` identical callers; ``make(i)`` builds caller i's request (sync, or async in async runs)."""

    callers: int
    make: Callable[[int], Callable[[], Any]]
    items: int = 1
    period: float = 0.0

    def pacer(self, i: int) -> Pacer:
        return Pacer(self.period, i * self.period / self.callers)


@dataclass(frozen=True)
class Result:
    """One group's raw numbers over one or more windows."""

    items: int
    seconds: float
    latencies: tuple[float, ...]
    run_items: int  # items the contender passed to fn over the windows, and in how many calls
    runs: int

    @classmethod
    def of(cls, tallies: list[Tally], window: Window, counters: tuple[tuple[int, int], tuple[int, int]]) -> Result:
        (items0, runs0), (items1, runs1) = counters
        return cls(
            sum(t.items for t in tallies),
            window.end - window.start,
            tuple(x for t in tallies for x in t.latencies),
            items1 - items0,
            runs1 - runs0,
        )

    @classmethod
    def pooled(cls, results: Sequence[Result]) -> Result:
        return cls(
            sum(r.items for r in results),
            sum(r.seconds for r in results),
            tuple(x for r in results for x in r.latencies),
            sum(r.run_items for r in results),
            sum(r.runs for r in results),
        )

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def p50(self) -> float:
        return self._percentile(0.50)

    @property
    def p99(self) -> float:
        return self._percentile(0.99)

    @property
    def mean_batch(self) -> float:
        return self.run_items / self.runs if self.runs else math.nan

    def _percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _sync_caller(request: Callable[[], Any], pacer: Pacer, items: int, window: Window, tally: Tally) -> None:
    while True:
        if pause := pacer.pause():
            time.sleep(pause)
        if (started := time.perf_counter()) >= window.end:
            return
        request()
        tally.add(window, started, time.perf_counter(), items)


async def _async_caller(
    request: Callable[[], Awaitable[Any]], pacer: Pacer, items: int, window: Window, tally: Tally
) -> None:
    while True:
        if pause := pacer.pause():
            await asyncio.sleep(pause)
        if (started := time.perf_counter()) >= window.end:
            return
        await request()
        tally.add(window, started, time.perf_counter(), items)


Counters = Callable[[], tuple[int, int]]


def run_threads(groups: list[Group], timing: Timing, counters: Counters) -> list[Result]:
    """Each group's callers as threads; ``counters`` is read at the window's start and end."""
    window = Window.after(timing)
    tallies = [[Tally() for _ in range(g.callers)] for g in groups]
    with ThreadPoolExecutor(max_workers=sum(g.callers for g in groups), thread_name_prefix="caller") as pool:
        futures = [
            pool.submit(_sync_caller, g.make(i), g.pacer(i), g.items, window, tallies[k][i])
            for k, g in enumerate(groups)
            for i in range(g.callers)
        ]
        time.sleep(max(0.0, window.start - time.perf_counter()))
        before = counters()
        time.sleep(max(0.0, window.end - time.perf_counter()))
        after = counters()
    for future in futures:
        future.result()  # a caller's error fails the benchmark
    return [Result.of(t, window, (before, after)) for t in tallies]


def run_tasks(groups: list[Group], timing: Timing, counters: Counters) -> list[Result]:
    """Each group's callers as tasks on one fresh event loop; requests are built inside that loop."""

    async def main() -> list[Result]:
        window = Window.after(timing)
        tallies = [[Tally() for _ in range(g.callers)] for g in groups]
        tasks = [
            asyncio.create_task(_async_caller(g.make(i), g.pacer(i), g.items, window, tallies[k][i]))
            for k, g in enumerate(groups)
            for i in range(g.callers)
        ]
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        before = counters()
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        after = counters()
        await asyncio.gather(*tasks)
        return [Result.of(t, window, (before, after)) for t in tallies]

    return asyncio.run(main())


Run = Callable[[], list[Result]]


def contender_run(
    factory: type[Contender], fn: Fn, groups: Callable[[Contender], list[Group]], timing: Timing,
    asynchronous: bool = False,
) -> Run:
    """One run of ``groups`` against a fresh contender, closed afterwards."""

    def run() -> list[Result]:
        contender = factory(fn)
        try:
            runner = run_tasks if asynchronous else run_threads
            return runner(groups(contender), timing, contender.counters)
        finally:
            contender.close()

    return run


def rotate(runs: dict[str, Run], rounds: int) -> dict[str, list[Result]]:
    """Each entry runs once per round, in turn; an entry's rounds are pooled group by group."""
    collected: dict[str, list[list[Result]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            collected[name].append(run())
    return {
        name: [Result.pooled(group) for group in zip(*per_round, strict=True)] for name, per_round in collected.items()
    }


def singles(contender: Contender, inputs: Sequence[Any], *, callers: int, asynchronous: bool = False,
            period: float = 0.0) -> Group:
    """Callers of one item at a time, each cycling through ``inputs`` from its own offset."""

    def make(i: int) -> Callable[[], Any]:
        call = contender.bind_loop() if asynchronous else contender.call
        stream = _cycle(inputs, i)
        return lambda: call(next(stream))

    return Group(callers, make, period=period)


def maps(contender: Contender, inputs: Sequence[Any], *, callers: int, size: int = MAP_SIZE) -> Group:
    """Closed-loop callers of ``size``-item maps."""

    def make(i: int) -> Callable[[], Any]:
        stream = _cycle(inputs, i * size)
        return lambda: contender.map([next(stream) for _ in range(size)])

    return Group(callers, make, items=size)


def _cycle(inputs: Sequence[Any], offset: int) -> Iterator[Any]:
    offset %= len(inputs)
    return itertools.cycle([*inputs[offset:], *inputs[:offset]])


# ---------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    scenario: str
    contender: str
    result: Result
    note: str = ""


@dataclass(frozen=True)
class Target:
    what: str
    value: float
    bound: float
    at_least: bool  # True: value >= bound passes; False: value <= bound passes
    unit: str = ""

    @property
    def verdict(self) -> str:
        ok = self.value >= self.bound if self.at_least else self.value <= self.bound
        return "PASS" if ok else "MISS"


def print_tables(rows: list[Row], targets: list[Target], markdown: bool) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.3f}"

    results = [
        [r.scenario, r.contender, f"{r.result.rate:,.0f}", ms(r.result.p50), ms(r.result.p99),
         "" if math.isnan(r.result.mean_batch) else f"{r.result.mean_batch:.1f}", r.note]
        for r in rows
    ]
    _table(["scenario", "contender", "items/s", "p50 ms", "p99 ms", "mean batch", "note"], results, markdown)
    print()
    checks = [
        [t.what, f"{t.value:.3g}{t.unit}", f"{'>=' if t.at_least else '<='} {t.bound:.3g}{t.unit}", t.verdict]
        for t in targets
    ]
    _table(["target", "measured", "goal", "verdict"], checks, markdown)


def _table(header: list[str], body: list[list[str]], markdown: bool) -> None:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in body if row[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    print(line(header))
    if markdown:
        rules = (("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric, strict=True))
        print("|" + "|".join(rules) + "|")
    else:
        print("  ".join("-" * w for w in widths))
    for row in body:
        print(line(row))


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------- scenarios


def no_op(items: list[Any]) -> list[Any]:
    return items


def bench_no_op(timing: Timing, rows: list[Row], targets: list[Target]) -> None:
    inputs = list(range(1024))
    for asynchronous in (False, True):
        mode = "asyncio" if asynchronous else "threads"
        for callers in NO_OP_CALLERS:
            # Defaults bind this iteration's values: the closure must not see a later loop's.
            def load(c: Contender, callers: int = callers, asynchronous: bool = asynchronous) -> list[Group]:
                return [singles(c, inputs, callers=callers, asynchronous=asynchronous)]

            results = rotate(
                {f.name: contender_run(f, no_op, load, timing, asynchronous) for f in CONTENDERS}, timing.rounds
            )
            speedup = results[Engine.name][0].rate / results[Batched.name][0].rate
            notes = {Engine.name: f"{speedup:.2f}x batched"}
            if asynchronous:
                notes[Direct.name] = "blocks the loop: one caller runs at a time"
            for name, [result] in results.items():
                rows.append(Row(f"no-op {mode} x{callers}", name, result, notes.get(name, "")))
            if asynchronous and callers == 64:
                targets.append(Target("no-op asyncio x64: microbatch / batched.aio", speedup, 1.5, True, "x"))


def bench_lone_caller(timing: Timing, period: float, rows: list[Row], targets: list[Target]) -> None:
    inputs = list(range(1024))
    for asynchronous, bound in ((False, 0.1), (True, 0.3)):
        mode = "async" if asynchronous else "sync"

        def load(c: Contender, asynchronous: bool = asynchronous) -> list[Group]:
            return [singles(c, inputs, callers=1, asynchronous=asynchronous, period=period)]

        results = rotate(
            {f.name: contender_run(f, no_op, load, timing, asynchronous) for f in CONTENDERS}, timing.rounds
        )
        [base] = results[Direct.name]
        for name, [result] in results.items():
            note = "" if name == Direct.name else (
                f"added p50 {(result.p50 - base.p50) * 1000:.3f} ms, p99 {(result.p99 - base.p99) * 1000:.3f} ms"
            )
            rows.append(Row(f"lone {mode} caller, a call every {period * 1000:g} ms", name, result, note))
        added = (results[Engine.name][0].p50 - base.p50) * 1000
        targets.append(Target(f"lone {mode} caller: microbatch added p50", added, bound, False, " ms"))


def load_model() -> Fn:
    """The examples' batch function and worker setup (``examples._embedder``), so the figures are the demo's:
    a call of a handful of texts on one torch thread, a larger one on the worker's count."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from examples._embedder import embed_texts, setup_worker_thread
    from examples._embedder import load_model as load

    load()
    Engine.on_worker_start = setup_worker_thread
    return embed_texts


def texts(count: int = 512) -> list[str]:
    """Sentences of 4 to 12 words, the same every run, so the ceiling and the contenders see alike lengths."""
    rng = random.Random(2024)
    words = (
        "the model batches requests from many users so every call shares one forward pass while the queue "
        "stays short and small requests go first under heavy load from bulk clients embedding documents"
    ).split()
    return [" ".join(rng.choices(words, k=rng.randint(4, 12))) for _ in range(count)]


def offline(n: int) -> str:
    return f"offline {n}"


def model_runs(
    fn: Fn, inputs: list[str], groups: Callable[[Contender], list[Group]], timing: Timing, sizes: Sequence[int],
    task_groups: Callable[[Contender], list[Group]] | None = None,
) -> dict[str, Run]:
    """The contenders under ``groups``, plus ``fn`` on batches of each of ``sizes`` back to back, in rotation;
    with ``task_groups``, microbatch under those (asyncio callers) too."""

    def back_to_back(n: int) -> Run:
        chunks = [inputs[i:i + n] for i in range(0, len(inputs) - n + 1, n)]

        def request(_: int) -> Callable[[], Any]:
            stream = itertools.cycle(chunks)
            return lambda: fn(next(stream))

        return lambda: run_threads([Group(1, request, items=n)], timing, lambda: (0, 0))

    return {
        **{offline(n): back_to_back(n) for n in sizes},
        **{f.name: contender_run(f, fn, groups, timing) for f in CONTENDERS},
        # The same callers as asyncio tasks on one loop, in the same rotation: threads against tasks in one run.
        **({} if task_groups is None else {ENGINE_TASKS: contender_run(Engine, fn, task_groups, timing, True)}),
    }


ENGINE_TASKS = "microbatch (tasks)"


def bench_model(fn: Fn, inputs: list[str], timing: Timing, rows: list[Row], targets: list[Target]) -> None:
    # The targets for closed-loop callers: 0.85 of the ceiling at 16, 0.93 at 64.
    for callers, bound in zip(MODEL_CALLERS, (0.85, 0.93), strict=True):
        scenario = f"model threads x{callers}"
        # Closed-loop callers never fill more than `callers` slots: their batch size's own offline rate
        # is the most any batcher can reach, shown beside the ceiling.
        limit = min(callers, BATCH)
        sizes = sorted({BATCH, limit}, reverse=True)

        def load(c: Contender, callers: int = callers) -> list[Group]:  # the default binds this iteration's value
            return [singles(c, inputs, callers=callers)]

        def tasks(c: Contender, callers: int = callers) -> list[Group]:
            return [singles(c, inputs, callers=callers, asynchronous=True)]

        runs = model_runs(fn, inputs, load, timing, sizes, tasks)
        results = rotate(runs, timing.rounds)
        [ceiling] = results[offline(BATCH)]
        [reachable] = results[offline(limit)]
        for name, [result] in results.items():
            if name == offline(BATCH):
                note = f"ceiling: batches of {BATCH} back to back"
            else:
                note = f"{result.rate / ceiling.rate:.2f} of ceiling"
                if limit != BATCH:
                    note += f", {result.rate / reachable.rate:.2f} of the batch-{limit} limit"
            rows.append(Row(scenario, name, result, note))
        targets.append(Target(f"model x{callers}: microbatch share of ceiling",
                              results[Engine.name][0].rate / ceiling.rate, bound, True))
        targets.append(Target(f"model x{callers}: microbatch (tasks) share of ceiling",
                              results[ENGINE_TASKS][0].rate / ceiling.rate, bound, True))


def bench_model_lone(fn: Fn, inputs: list[str], timing: Timing, period: float, rows: list[Row],
                     targets: list[Target]) -> None:
    """A lone caller of the model, one call every ``period``: what the worker thread adds over an inline call.

    Beside it, 32-text maps back to back through the batcher (the model at batch 32 on the worker)
    against the offline ceiling (batch 32 on the caller's own thread).
    """
    scenario = f"model, lone caller every {period * 1000:g} ms"

    def lone(c: Contender) -> list[Group]:
        return [singles(c, inputs, callers=1, period=period)]

    runs = {f.name: contender_run(f, fn, lone, timing) for f in (Direct, Engine, BareEngine)}
    full = model_runs(fn, inputs, lambda c: [maps(c, inputs, callers=1, size=BATCH)], timing, [BATCH])
    runs[offline(BATCH)] = full[offline(BATCH)]
    runs[Engine.name + " maps"] = full[Engine.name]
    results = rotate(runs, timing.rounds)
    [base] = results[Direct.name]
    for name in (Direct.name, Engine.name, BareEngine.name):
        [result] = results[name]
        note = "" if name == Direct.name else f"added p50 {(result.p50 - base.p50) * 1000:+.2f} ms"
        rows.append(Row(scenario, name, result, note))
    targets.append(Target("model lone caller: microbatch added p50", (results[Engine.name][0].p50 - base.p50) * 1000,
                          0.3, False, " ms"))
    [ceiling] = results[offline(BATCH)]
    rows.append(Row(f"model, batch {BATCH} back to back", offline(BATCH), ceiling, "inline, the caller's thread"))
    [worker] = results[Engine.name + " maps"]
    ratio = worker.rate / ceiling.rate
    rows.append(Row(f"model, batch {BATCH} back to back", "microbatch", worker,
                    f"{BATCH}-item maps, on the worker: {ratio:.2f} of inline"))
    targets.append(Target(f"model batch {BATCH} on the worker / inline", ratio, 0.95, True))


def bench_mixed(fn: Fn, inputs: list[str], timing: Timing, period: float, rows: list[Row],
                targets: list[Target]) -> None:
    scenario = f"mixed: {MIXED_SINGLES} singles every {period * 1000:g} ms + {MIXED_BULK} x {MAP_SIZE}-item maps"

    def load(c: Contender) -> list[Group]:
        return [singles(c, inputs, callers=MIXED_SINGLES, period=period), maps(c, inputs, callers=MIXED_BULK)]

    results = rotate(model_runs(fn, inputs, load, timing, [BATCH]), timing.rounds)
    [ceiling] = results.pop(offline(BATCH))
    batch_time = ceiling.p50
    rows.append(Row(scenario, offline(BATCH), ceiling, f"ceiling; full-batch run time {batch_time * 1000:.0f} ms"))
    for name, (one, bulk) in results.items():
        rows.append(Row(f"{scenario}: singles", name, one, f"p99 = {one.p99 / batch_time:.2f} full-batch run times"))
        rows.append(Row(f"{scenario}: bulk", name, bulk,
                        f"{bulk.rate / ceiling.rate:.2f} of ceiling ({(bulk.rate + one.rate) / ceiling.rate:.2f} "
                        "with singles)"))
    one, bulk = results[Engine.name]
    targets.append(Target("mixed: microbatch singles p99 / full-batch run time", one.p99 / batch_time, 2.0, False, "x"))
    targets.append(Target("mixed: microbatch bulk share of ceiling", bulk.rate / ceiling.rate, 0.9, True))


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run: one round of short windows")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--rounds", type=int, help="runs of each contender per scenario, pooled (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="window of each no-op run (default 0.6, quick 0.5)")
    parser.add_argument("--model-seconds", type=float,
                        help="window of each model run; the mixed load gets 1.5 times it (default 2, quick 1)")
    parser.add_argument("--warmup", type=float,
                        help="warm-up before each no-op window, doubled for the model, at least 2 s for the mixed "
                        "load (default 0.3, quick 0.2)")
    parser.add_argument("--lone-period-ms", type=float, default=1.0, help="the lone caller starts a call this often")
    parser.add_argument("--single-period-ms", type=float, default=500.0,
                        help="mixed load: each single-item caller starts one call per period")
    parser.add_argument("--model-lone-period-ms", type=float, default=30.0,
                        help="the model's lone caller starts a call this often (the model idles in between)")
    parser.add_argument("--only", help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)} (default: all)")
    args = parser.parse_args(argv)
    scenarios = set(args.only.split(",")) if args.only else set(SCENARIOS)
    if not scenarios <= set(SCENARIOS):
        parser.error(f"--only takes {', '.join(SCENARIOS)}, got {args.only!r}")
    quick = args.quick

    def pick(value: float | None, full: float, short: float) -> float:
        return value if value is not None else (short if quick else full)

    rounds = int(pick(args.rounds, 3, 1))
    warmup = pick(args.warmup, 0.3, 0.2)
    model_seconds = pick(args.model_seconds, 2.0, 1.0)
    timing = Timing(warmup, pick(args.seconds, 0.6, 0.5), rounds)
    # A model batch takes tens of milliseconds: longer windows keep the count of whole batches high,
    # and the mixed load's paced singles need a longer one still for their p99 to rest on enough calls.
    # Its warm-up lets the first maps, queued before the batcher had timed a full batch, drain: their
    # priority is set on arrival, so until then they show the start-up transient, not the steady state.
    model_timing = Timing(2 * warmup, model_seconds, rounds)
    mixed_timing = Timing(max(2 * warmup, 2.0), 1.5 * model_seconds, rounds)

    rows: list[Row] = []
    targets: list[Target] = []
    started = time.perf_counter()
    print(f"microbatch engine benchmark on {os.cpu_count()} cores, {rounds} round(s) per scenario; "
          "the machine may be shared, so numbers are noisy", file=sys.stderr)
    if "no-op" in scenarios:
        bench_no_op(timing, rows, targets)
        bench_lone_caller(timing, args.lone_period_ms / 1000, rows, targets)
    fn = load_model()
    inputs = texts()
    fn(inputs[:BATCH])  # the first call pays one-off setup
    if "lone" in scenarios:
        bench_model_lone(fn, inputs, model_timing, args.model_lone_period_ms / 1000, rows, targets)
    if "threads" in scenarios:
        bench_model(fn, inputs, model_timing, rows, targets)
    if "mixed" in scenarios:
        bench_mixed(fn, inputs, mixed_timing, args.single_period_ms / 1000, rows, targets)
    print_tables(rows, targets, args.markdown)
    print(f"\n(total {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
