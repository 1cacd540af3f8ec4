"""Shared tools for the engine tests: a batch function the test holds, callers on real threads and
event loops, a controllable engine clock, and bounded waits for conditions (never fixed sleeps).

The central tool is :class:`Gate`, a batch function that records each batch and then blocks until
the test releases it. While the worker is held inside the gate, the test queues exactly the calls it
wants (waiting until ``stats.queue_depth`` says they are queued), then releases the gate and reads
the composition of the next batches from ``gate.calls``: the engine's behaviour is checked through
what it did, never through how long it took.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import pytest

import microbatch._clock
from microbatch import Batcher
from tests._support import thread_errors, wait_until  # noqa: F401 - thread_errors is an autouse fixture

# Upper bound for a condition that should hold almost at once. It only limits how long a failing
# test hangs; no assertion depends on it.
WAIT = 10.0




def wait_for_depth(b: Batcher[Any, Any], n: int) -> None:
    """Wait until exactly ``n`` items of ``b`` are queued (accepted and not yet dispatched)."""
    wait_until(lambda: b.stats.queue_depth == n, f"{b.name} has {n} items queued (now {b.stats.queue_depth})")


def outputs(items: Sequence[Any]) -> list[Any]:
    """The fake model: each item ``x`` gives ``("out", x)``, so every caller can check it got its own result."""
    return [("out", x) for x in items]


class Gate:
    """A sync batch function that records each batch, then blocks until the test releases it.

    ``process`` computes the outputs once released (it may raise, or return the wrong count); the
    default is :func:`outputs`. A gate starts closed: every call blocks until :meth:`release` gives
    it a permit or :meth:`open` lets every call through from then on.
    """

    def __init__(self, process: Callable[[list[Any]], Any] = outputs, *, open: bool = False) -> None:
        self.process = process
        self._cond = threading.Condition()
        self._open = open
        self._permits = 0
        self.calls: list[list[Any]] = []  # each call's items, in call order
        self.threads: list[str] = []  # the name of the thread each call ran on
        self.blocked = 0  # calls waiting in the gate right now

    def __call__(self, items: list[Any]) -> Any:
        self._record(items)
        self._block()
        return self.process(items)

    def _record(self, items: list[Any]) -> None:
        with self._cond:
            self.calls.append(list(items))
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def _block(self) -> None:
        with self._cond:
            self.blocked += 1
            self._cond.notify_all()
            while not self._open and not self._permits:
                self._cond.wait()
            if not self._open:
                self._permits -= 1
            self.blocked -= 1
            self._cond.notify_all()

    def release(self, n: int = 1) -> None:
        """Let ``n`` more calls through (the blocked one first)."""
        with self._cond:
            self._permits += n
            self._cond.notify_all()

    def open(self) -> None:
        """Let every call through, now and from now on."""
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wait_calls(self, n: int) -> None:
        """Wait until the batch function has been called ``n`` times (each call recorded on entry)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= n, WAIT):
                raise AssertionError(f"timed out waiting for call {n} of the batch function; calls: {self.calls}")

    def wait_blocked(self) -> None:
        """Wait until a call is held in the gate (recorded and blocked)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.blocked > 0, WAIT):
                raise AssertionError(f"timed out waiting for a call to block in the gate; calls: {self.calls}")

    @property
    def held(self) -> bool:
        """A call is blocked in the gate and no release for it is pending: the worker is stopped here."""
        with self._cond:
            return self.blocked > 0 and not self._permits and not self._open

    @property
    def items(self) -> list[Any]:
        """Every item the batch function was given, in order (an item retried after a failure repeats)."""
        return [x for call in self.calls for x in call]

    @property
    def sizes(self) -> list[int]:
        return [len(call) for call in self.calls]


class AsyncGate(Gate):
    """An ``async def`` batch function with the same recording and holding as :class:`Gate`.

    It also records the event loop each call ran on; it waits for the gate in a helper thread so
    that the batcher's own loop stays free while it is held.
    """

    def __init__(self, process: Callable[[list[Any]], Any] = outputs, *, open: bool = False) -> None:
        super().__init__(process, open=open)
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def __call__(self, items: list[Any]) -> Any:
        self.loops.append(asyncio.get_running_loop())
        self._record(items)
        await asyncio.to_thread(self._block)
        return self.process(items)


class _Outcome:
    """What a call running elsewhere ended with; subclasses set ``done`` and say what they are."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False

    def describe(self) -> str:
        raise NotImplementedError

    def wait(self, timeout: float = WAIT) -> None:
        if not self.done.wait(timeout):
            raise AssertionError(f"{self.describe()} did not finish within {timeout}s")

    def result(self, timeout: float = WAIT) -> Any:
        """The call's return value; re-raises what the call raised (CancelledError if cancelled)."""
        self.wait(timeout)
        if self.cancelled:
            raise asyncio.CancelledError()
        if self.error is not None:
            raise self.error
        return self.value

    def exception(self, timeout: float = WAIT) -> BaseException | None:
        self.wait(timeout)
        return self.error


class Call(_Outcome):
    """A blocking call made on a thread of its own (named ``caller-N``); the test collects its outcome."""

    _ids = itertools.count()

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()  # a blocking call cannot be cancelled: ``cancelled`` stays False
        self._target: Callable[[], Any] = functools.partial(fn, *args, **kwargs)
        self.thread = threading.Thread(target=self._run, name=f"caller-{next(Call._ids)}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self._target()
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever the caller got
            self.error = exc
        finally:
            self.done.set()

    def describe(self) -> str:
        return self.thread.name


class AsyncCall(_Outcome):
    """A coroutine run as a task on a :class:`LoopThread`; cancellable from the test thread."""

    def __init__(self, loop_thread: LoopThread, coro: Coroutine[Any, Any, Any]) -> None:
        super().__init__()
        self.loop = loop_thread.loop
        created = threading.Event()

        def create() -> None:
            self.task = self.loop.create_task(coro)
            self.task.add_done_callback(self._finished)
            created.set()

        self.loop.call_soon_threadsafe(create)
        if not created.wait(WAIT):
            raise AssertionError("the loop thread did not start the task")

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.cancelled = True
        elif task.exception() is not None:
            self.error = task.exception()
        else:
            self.value = task.result()
        self.done.set()

    def cancel(self) -> None:
        """Cancel the task (as a server does when its client disconnects)."""
        self.loop.call_soon_threadsafe(self.task.cancel)

    def describe(self) -> str:
        return f"task {self.task!r}"


class LoopThread:
    """An event loop running forever in its own thread, standing in for an ASGI server's loop.

    Whatever the loop reports to its exception handler (an exception nobody retrieved, a callback
    that raised) is collected in ``errors``; the fixtures fail the test if any was reported.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def start(self, coro: Coroutine[Any, Any, Any]) -> AsyncCall:
        """Start ``coro`` as a task on this loop without waiting for it."""
        return AsyncCall(self, coro)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = WAIT) -> Any:
        """Run ``coro`` on this loop and return its result (re-raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        # Let callbacks already scheduled (results being settled) run before the loop stops.
        self.loop.call_soon_threadsafe(lambda: self.loop.call_soon(self.loop.stop))
        self.thread.join(WAIT)
        if not self.thread.is_alive():
            self.loop.close()


class FakeClock:
    """The engine's monotonic clock, frozen until the test advances it.

    With the clock frozen, anything the engine would do "after some time" never happens on its own,
    so a test shows what the engine waits for by advancing time explicitly.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    """:func:`wait_until`: ``wait_until(predicate, what)`` (test modules cannot import conftest)."""
    return wait_until


@pytest.fixture
def queued() -> Callable[[Batcher[Any, Any], int], None]:
    """``queued(b, n)`` waits until exactly ``n`` items of ``b`` are queued."""
    return wait_for_depth


@pytest.fixture
def spawn() -> Callable[..., Call]:
    """``spawn(fn, *args, **kwargs)`` runs ``fn`` on a new thread and returns its :class:`Call`."""
    return Call


@pytest.fixture
def hold() -> Callable[[Batcher[Any, Any], Gate], Call]:
    """``hold(b, gate)`` occupies ``b``'s worker with a call of ``"blocker"`` held in ``gate``.

    Returns that call. Until the gate is released, everything submitted afterwards queues up.
    """

    def occupy(b: Batcher[Any, Any], gate: Gate) -> Call:
        blocker = Call(b, "blocker")
        gate.wait_blocked()
        return blocker

    return occupy


@pytest.fixture
def enqueue() -> Callable[..., list[Call]]:
    """``enqueue(b, *requests)`` submits each request in turn, each on its own thread, waiting until
    it is queued before the next, so their arrival order is known. A list is one ``map``; anything
    else is one call."""

    def submit(b: Batcher[Any, Any], *requests: Any) -> list[Call]:
        calls = []
        depth = b.stats.queue_depth
        for request in requests:
            calls.append(Call(b.map, request) if isinstance(request, list) else Call(b, request))
            depth += len(request) if isinstance(request, list) else 1
            wait_for_depth(b, depth)
        return calls

    return submit




@pytest.fixture
def make_gate(make_batcher: Callable[..., Batcher[Any, Any]]) -> Iterator[Callable[..., Gate]]:
    """``make_gate(process=outputs, open=False, is_async=False)`` makes a :class:`Gate`; all are opened at teardown.

    It depends on ``make_batcher`` only so that its teardown runs first: gates open, then batchers close.
    """
    made: list[Gate] = []

    def make(process: Callable[[list[Any]], Any] = outputs, *, open: bool = False, is_async: bool = False) -> Gate:
        gate = (AsyncGate if is_async else Gate)(process, open=open)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.open()


@pytest.fixture(params=[False, True], ids=["sync-fn", "async-fn"])
def is_async(request: pytest.FixtureRequest) -> bool:
    """Runs the test twice: with a sync batch function (called on the worker thread) and with an
    ``async def`` one (run on the worker's own event loop), the engine's two worker loops."""
    return bool(request.param)


@pytest.fixture
def gate(make_gate: Callable[..., Gate], is_async: bool) -> Gate:
    """A closed :class:`Gate` producing :func:`outputs`, sync and async in turn (see ``is_async``)."""
    return make_gate(is_async=is_async)


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher[Any, Any]]]:
    """``make_batcher(fn, **options)`` makes a Batcher that is closed (without draining) at teardown."""
    made: list[Batcher[Any, Any]] = []

    def make(fn: Any, **options: Any) -> Batcher[Any, Any]:
        b: Batcher[Any, Any] = Batcher(fn, **options)
        made.append(b)
        return b

    yield make
    # make_gate's teardown has opened the gates; close in helper threads all the same, so that a
    # batcher stuck for any other reason cannot hang the teardown.
    closers = [threading.Thread(target=b.close, kwargs={"drain": False}, daemon=True) for b in made]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(0.5)


@pytest.fixture
def make_loop() -> Iterator[Callable[[str], LoopThread]]:
    """``make_loop(name)`` starts a :class:`LoopThread`; at teardown it is stopped and must have reported no errors."""
    loops: list[LoopThread] = []

    def make(name: str = "caller-loop") -> LoopThread:
        loop_thread = LoopThread(name)
        loops.append(loop_thread)
        return loop_thread

    yield make
    for loop_thread in loops:
        loop_thread.stop()
    errors = [context for loop_thread in loops for context in loop_thread.errors]
    assert not errors, f"an event loop reported unhandled errors: {errors}"


@pytest.fixture
def loop_thread(make_loop: Callable[[str], LoopThread]) -> LoopThread:
    """One caller event loop in its own thread."""
    return make_loop("caller-loop")


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the engine's clock (arrival times, deadlines, wait bounds, run times) with a :class:`FakeClock`.

    Only the engine's scheduling clock is replaced: a caller's own blocking wait still uses real
    time, so tests give such callers long timeouts and drive expiry through the fake clock.
    """
    clock = FakeClock()
    monkeypatch.setattr(microbatch._clock, "now", clock)
    return clock
