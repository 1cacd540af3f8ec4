"""A batcher's crew of workers: one per replica of the model, all taking batches from the one queue.

``fn`` may be one function or a list of replicas (one per GPU, say). An ``async def`` replica gets
one worker whose event loop runs up to ``max_concurrent_batches`` batches at once; a sync replica
gets that many worker threads, since a thread runs one call at a time. Every worker plans its own
next batch when it has a free slot (pull: the least busy replica takes the next batch), so the crew
only starts them, wakes one that sleeps when work arrives, and knows when the last one has exited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._collate import Collate
from ._worker import Engine, Worker, is_async_callable

__all__ = ["Crew", "replicas_of"]


def replicas_of(fn: object) -> tuple[Callable[..., Any], ...]:
    """The replicas ``fn`` names: itself, or each function of a non-empty list or tuple; all sync or all async."""
    if isinstance(fn, (list, tuple)):
        replicas = tuple(fn)
        if not replicas:
            raise ValueError("Batcher got an empty list of replicas: pass at least one batch function")
    else:
        replicas = (fn,)
    for index, replica in enumerate(replicas):
        if not callable(replica):
            where = "" if len(replicas) == 1 and fn is replica else f" (replica {index})"
            raise TypeError(
                f"Batcher needs a callable batch function{where}, got {type(replica).__name__}: "
                "pass fn=your_function or a list of them"
            )
    if len({is_async_callable(replica) for replica in replicas}) > 1:
        raise TypeError("the replicas of one batcher must be all sync or all `async def` functions, not a mix")
    return replicas


class Crew:
    """The workers of one batcher and their slots. Methods marked *locked* are called under the batcher's lock."""

    __slots__ = ("workers", "replicas", "slots", "_live", "started", "idents")

    def __init__(
        self,
        engine: Engine,
        lock: threading.Lock,
        replicas: Sequence[Callable[..., Any]],
        collate: Collate | None,
        isolate: bool,
        on_start: Callable[[], object] | None,
        concurrent: int,
    ) -> None:
        workers: list[Worker] = []
        for fn in replicas:
            if is_async_callable(fn):
                workers.append(Worker(engine, lock, fn, collate, isolate, on_start, slots=concurrent))
            else:
                workers.extend(Worker(engine, lock, fn, collate, isolate, on_start) for _ in range(concurrent))
        self.workers = tuple(workers)
        self.replicas = len(replicas)
        self.slots = len(replicas) * concurrent  # batches in flight at most, over the whole crew
        self._live = 0  # started workers that have not exited yet
        self.started = False  # read on every call: a plain attribute, not a property
        # The thread ids of the running workers, each added by its own thread before any user code runs
        # there: a call tests its own id against it (a C call and a set lookup) before refuse_own_thread.
        self.idents: set[int] = set()

    def __repr__(self) -> str:
        busy = sum(worker.busy for worker in self.workers)
        return f"<Crew workers={len(self.workers)} busy={busy}/{self.slots} live={self._live}>"

    def start(self, name: str) -> None:
        """Start every worker (*locked*): threads ``microbatch-<name>``, with ``-<i>`` when there are several."""
        many = len(self.workers) > 1
        self.started = True
        for index, worker in enumerate(self.workers):
            worker.start(f"{name}-{index}" if many else name, self.idents)
            self._live += 1

    def wake(self) -> None:
        """Wake one sleeping worker with a free slot, if any (*locked*): new work arrived."""
        for worker in self.workers:
            if worker.waiting:
                worker.wake()
                return

    def wake_all(self) -> None:
        """Wake every sleeping worker (*locked*): the batcher is closing."""
        for worker in self.workers:
            if worker.waiting:
                worker.wake()

    def state(self, closing: bool) -> str:
        """``idle`` (not started), ``running``, ``closing`` (a worker still runs) or ``closed``."""
        if closing:
            return "closing" if any(thread.is_alive() for thread in self.threads()) else "closed"
        return "running" if self.started else "idle"

    def threads(self) -> list[threading.Thread]:
        return [worker.thread for worker in self.workers if worker.thread is not None]

    def exited(self) -> bool:
        """Count one worker gone (*locked*); True when it was the last."""
        self._live -= 1
        return self._live == 0

    def refuse_own_thread(self, method: str, async_method: str | None, name: str) -> None:
        """Raise if called on one of the workers' threads, where waiting for a result could wait on itself.

        Callers test ``threading.get_ident() in idents`` first, so a call from any other thread skips this.
        """
        current = threading.current_thread()
        for worker in self.workers:
            if worker.thread is current:
                break
        else:
            return
        if async_method is not None:
            fix = f"await {async_method}() instead, from outside the batch function"
        else:
            fix = "the batch function cannot wait for its own batcher; call the model directly there"
        raise RuntimeError(
            f"{method}() was called on batcher {name!r}'s own worker, where it would wait on itself forever: {fix}"
        )
