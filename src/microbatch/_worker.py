"""A worker: one long-lived thread that drives batches through one replica of ``fn``, sync or async.

One driver (:meth:`Worker._drive`) plans and sleeps for both kinds of ``fn``: it is a generator that
yields either a delay to sleep for or a batch to start, and plans only while the worker has a free
slot. A sync ``fn`` has one slot and runs each batch on the worker thread; an ``async def`` runs on
an event loop that thread owns for the batcher's whole life, with up to ``slots`` batches in flight
on it at once (each one a task). Only those two small runners differ; each batch goes through
:func:`~microbatch._execute.run_batch`. The sync runner wakes the callers of a batch only once it has
planned its next step (the next batch is formed, or it is about to sleep): woken callers would
otherwise contend with it for the GIL and the batcher's lock before it could start the model again,
a delay of one GIL hand-off per caller between batches. Callers never run ``fn``, so Flask/Django threads, ASGI loops
and ``async_to_sync`` one-off loops can share a batcher. A batcher's workers (one per replica) form
its :class:`~microbatch._crew.Crew`. A forked child starts without the parent's workers
(:func:`~microbatch._fork.track_for_fork`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

from . import _clock
from ._collate import Collate
from ._execute import Outcome, Outcomes, run_batch
from ._queue import Slice
from ._waiters import Outbox, send
from ._wakeups import LoopWakeup, ThreadWakeup

__all__ = ["Engine", "Worker", "is_async_callable"]

logger = logging.getLogger("microbatch")

# What the driver yields: a batch to start, or seconds to sleep (None: until woken).
Step = list[Slice] | float | None


class Engine(Outcomes, Protocol):
    """What the worker drives: the batcher's planning and its exit signal."""

    def _plan_locked(self) -> tuple[list[Slice] | None, float | None]:
        """A batch to run, or how long to sleep (None: until woken; 0.0: exit). Called under the lock."""

    def _worker_exited(self) -> None:
        """A worker is gone for good: called last, on its thread."""


class Worker:
    """One worker thread, started on demand; ``waiting`` and ``wake`` are used under the lock.

    ``waiting`` is True while the driver sleeps with a free slot and wants a wake-up on arrival or
    close. ``busy`` counts its batches in flight (at most ``slots``; only its own thread changes it).
    """

    __slots__ = (
        "_engine", "_lock", "_fn", "_collate", "_isolate", "_on_start", "is_async", "slots", "busy", "thread",
        "waiting", "_wakeup",
    )

    def __init__(
        self,
        engine: Engine,
        lock: threading.Lock,
        fn: Callable[..., Any],
        collate: Collate | None,
        isolate: bool,
        on_start: Callable[[], object] | None = None,
        slots: int = 1,
    ) -> None:
        self._engine = engine
        self._on_start = on_start
        self._lock = lock
        self._fn = fn
        self._collate = collate
        self._isolate = isolate
        self.is_async = is_async_callable(fn)
        self.slots = slots
        self.busy = 0
        self.thread: threading.Thread | None = None
        self.waiting = False
        self._wakeup: ThreadWakeup | LoopWakeup = ThreadWakeup()  # each runner installs its own at start

    def __repr__(self) -> str:
        alive = self.thread is not None and self.thread.is_alive()
        return (
            f"<Worker {'async' if self.is_async else 'sync'} alive={alive} busy={self.busy}/{self.slots} "
            f"waiting={self.waiting}>"
        )

    def start(self, name: str, idents: set[int]) -> None:
        """Start the thread; it adds its id to ``idents`` before anything else and removes it as it ends."""
        run = self._run_async if self.is_async else self._run_sync

        def target() -> None:
            ident = threading.get_ident()
            idents.add(ident)
            try:
                self._started(name)
                run()
            finally:
                idents.discard(ident)  # the id may be reused by a later thread: it must not be refused

        self.thread = threading.Thread(target=target, name=f"microbatch-{name}", daemon=True)
        self.thread.start()

    def _started(self, name: str) -> None:
        """Run ``on_worker_start`` on this (the worker) thread; its failure must not cost the callers their worker."""
        if self._on_start is None:
            return
        try:
            self._on_start()
        except BaseException:  # noqa: BLE001 - even SystemExit here must not leave callers without a worker
            logger.exception("microbatch: on_worker_start of batcher %r raised; the worker serves without it", name)

    def wake(self) -> None:
        """Wake the sleeping driver (call under the lock, when ``waiting``)."""
        self.waiting = False
        self._wakeup.set()

    def _drive(self) -> Generator[Step, None, None]:
        """The one driver loop: while a slot is free plan under the lock, then sleep or start the batch."""
        engine, lock = self._engine, self._lock
        while True:
            if self.busy >= self.slots:
                # Every slot is taken: sleep until one of this worker's batches ends (it sets the
                # wake-up itself); arrivals do not wake a worker that could not take them.
                self._wakeup.clear()
                yield None
                continue
            with lock:
                self.waiting = False
                batch, delay = engine._plan_locked()
                if batch is None and delay != 0.0:
                    # Armed under the lock, before it is released: an arrival from now on wakes us.
                    self._wakeup.clear()
                    self.waiting = True
            if batch is not None:
                yield batch
            elif delay == 0.0:
                return
            else:
                yield delay

    def _run_sync(self) -> None:
        call = self._invoker()
        wakeup = ThreadWakeup()
        with self._lock:
            self._wakeup = wakeup
        outbox: Outbox = []  # outcomes decided, callers not yet woken
        try:
            for step in self._drive():
                if outbox:
                    # The next step is planned (and the lock released): now wake the last batch's callers.
                    send(outbox)
                    outbox.clear()
                if isinstance(step, list):
                    self.busy = 1
                    self._run_batch_sync(step, call, outbox)
                    self.busy = 0
                else:
                    wakeup.wait(step)
        finally:
            send(outbox)  # nothing decided is ever left undelivered, even when the worker exits
            self._engine._worker_exited()

    def _run_batch_sync(self, batch: list[Slice], call: Callable[[list[Any]], Any], outbox: Outbox) -> None:
        steps = run_batch(batch, self._engine, self._isolate, outbox)
        try:
            items = next(steps)
            while True:
                if outbox:  # a bisection's earlier part: its callers need not wait for the next call
                    send(outbox)
                    outbox.clear()
                started = _clock.now()
                try:
                    outcome: Outcome = (True, call(items), _clock.now() - started)
                except BaseException as exc:  # noqa: BLE001 - the batch function's failure is the callers' to see
                    outcome = (False, exc, _clock.now() - started)
                items = steps.send(outcome)
        except StopIteration:
            pass

    def _invoker(self) -> Callable[[list[Any]], Any]:
        """What the sync worker calls on a list of items: ``fn``, wrapped in the collation if any."""
        fn, collate = self._fn, self._collate
        if collate is None:
            return fn

        def invoke(items: list[Any]) -> Any:
            return collate.split(fn(collate.collate(items)), items)

        return invoke

    def _run_async(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run_on_loop(loop))
        finally:
            loop.close()
            self._engine._worker_exited()

    async def _run_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        wakeup = LoopWakeup(loop)
        with self._lock:
            self._wakeup = wakeup
        tasks: set[asyncio.Task[None]] = set()
        try:
            for step in self._drive():
                if not isinstance(step, list):
                    await wakeup.wait(step)
                    continue
                self.busy += 1
                if self.slots == 1:
                    await self._run_batch_async(step, wakeup)  # one at a time: no task to create
                else:
                    task = loop.create_task(self._run_batch_async(step, wakeup))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            # Closing (or a fault) ends planning; the batches still in flight finish before the worker exits.
            while tasks:
                await asyncio.wait(set(tasks))

    async def _run_batch_async(self, batch: list[Slice], wakeup: LoopWakeup) -> None:
        fn: Callable[[Any], Awaitable[Any]] = self._fn
        collate = self._collate
        outbox: Outbox = []
        steps = run_batch(batch, self._engine, self._isolate, outbox)
        try:
            items = next(steps)
            while True:
                if outbox:
                    send(outbox)
                    outbox.clear()
                started = _clock.now()
                try:
                    if collate is None:
                        result = await fn(items)
                    else:
                        result = collate.split(await fn(collate.collate(items)), items)
                    outcome: Outcome = (True, result, _clock.now() - started)
                except BaseException as exc:  # noqa: BLE001
                    outcome = (False, exc, _clock.now() - started)
                items = steps.send(outcome)
        except StopIteration:
            pass
        finally:
            send(outbox)
            self.busy -= 1
            wakeup.set_here()  # a slot is free: the driver may plan again


def is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    # An instance whose class defines ``async def __call__`` counts too: this reads the method, not callability.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
