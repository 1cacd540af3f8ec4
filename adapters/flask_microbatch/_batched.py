"""What ``@mb.batch(...)`` returns, and the per-app state it finds its batcher in."""

from __future__ import annotations

import atexit
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Literal, TypedDict, TypeVar

from flask import Flask, current_app, has_app_context

from microbatch import Batcher, BatcherClosed, Stats

__all__ = ["CONFIG", "EXTENSION_KEY", "AppState", "BatchOptions", "BatchedFunction", "state_of"]

T = TypeVar("T")
U = TypeVar("U")

EXTENSION_KEY = "microbatch"
# App config key -> (setting, default). The defaults are the engine's; "timeout" is the per-call default.
CONFIG: dict[str, tuple[str, object]] = {
    "MICROBATCH_MAX_BATCH_SIZE": ("max_batch_size", 32),
    "MICROBATCH_MAX_WAIT_MS": ("max_wait_ms", None),
    "MICROBATCH_MAX_QUEUE_SIZE": ("max_queue_size", 10_000),
    "MICROBATCH_SMALL_REQUEST_SIZE": ("small_request_size", 4),
    "MICROBATCH_TIMEOUT": ("timeout", None),
}


class BatchOptions(TypedDict, total=False):
    """Arguments of ``@mb.batch(...)``: each one given overrides the app's ``MICROBATCH_*`` config."""

    max_batch_size: int
    max_wait_ms: float | None
    max_queue_size: int
    small_request_size: int
    timeout: float | None  # seconds; the default of calls that pass no timeout (None: no limit)
    on_error: Literal["isolate", "fail_batch"]
    aging_ms: float | None
    name: str
    on_worker_start: Callable[[], object] | None  # runs on the batcher's worker thread when it starts


class AppState:
    """What ``init_app`` keeps in ``app.extensions["microbatch"]``: its owner and the app's batchers."""

    __slots__ = ("owner", "lock", "batchers", "closed", "__weakref__")

    def __init__(self, owner: object) -> None:
        self.owner = owner  # the Microbatch instance that registered the app
        self.lock = threading.Lock()  # held only to create a batcher, never to look one up
        self.batchers: dict[BatchedFunction[Any, Any], Batcher[Any, Any]] = {}
        self.closed = False
        _open_states.add(self)

    def close(self, drain: bool) -> None:
        with self.lock:
            self.closed = True
            batchers = list(self.batchers.values())
        for b in batchers:
            b.close(drain=drain)


_open_states: weakref.WeakSet[AppState] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    # Worker threads are daemons: without this, calls queued when the process exits would be lost.
    for state in list(_open_states):
        state.close(drain=True)


def state_of(app: Flask, owner: object) -> AppState:
    """``app``'s state, which ``owner`` must have registered; the error says how to fix it otherwise."""
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, AppState) or state.owner is not owner:
        raise RuntimeError(
            f"the Flask app {app.name!r} is not registered with this Microbatch instance: "
            "did you forget to call init_app(app) on the instance that decorated the function?"
        )
    return state


class BatchedFunction(Generic[T, U]):
    """A batch function bound to a :class:`~flask_microbatch.Microbatch`; call it from any view.

    Each Flask app gets its own :class:`microbatch.Batcher` for it, built on first use from that app's
    config and the decorator's arguments, so app factories and several apps in one process work.
    Calls, ``.stats`` and ``.batcher`` act on the batcher of ``current_app``. The function itself runs
    on the batcher's worker with its app's context pushed, so ``current_app`` works there too.
    """

    def __init__(
        self,
        owner: object,
        fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]],
        options: BatchOptions,
    ) -> None:
        self._owner = owner
        self._fn = fn
        self._options = options
        self.__name__: str = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch and return its output, blocking this thread only.

        ``timeout`` (seconds) defaults to the app's ``MICROBATCH_TIMEOUT``; a request's
        ``X-Request-Timeout`` applies on top.
        """
        return self._current()(item, timeout=timeout)

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Async :meth:`__call__`, for ``async def`` views."""
        return await self._current().acall(item, timeout=timeout)

    def map(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Run many items as one request; outputs in input order."""
        return self._current().map(items, timeout=timeout)

    async def amap(self, items: Iterable[T], *, timeout: float | None = None) -> list[U]:
        """Async :meth:`map`."""
        return await self._current().amap(items, timeout=timeout)

    @property
    def batcher(self) -> Batcher[T, U]:
        """The current app's batcher for this function."""
        return self._current()

    @property
    def stats(self) -> Stats:
        """The current app's batcher's :class:`microbatch.Stats`."""
        return self._current().stats

    def __repr__(self) -> str:
        return f"<BatchedFunction {self.__name__}>"

    def _current(self) -> Batcher[T, U]:
        """The current app's batcher for this function, built on first use."""
        if not has_app_context():
            raise RuntimeError(
                f"{self.__name__}() needs a Flask application context to find its app's batcher: call it "
                "while handling a request, or push one with `with app.app_context():` "
                "(and did you forget to call init_app(app)?)"
            )
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        state = state_of(app, self._owner)
        # A dict read is atomic: the lock is only taken the first time an app uses this function.
        entry = state.batchers.get(self)
        if entry is None:
            with state.lock:
                entry = state.batchers.get(self) or self._build(app, state)
        return entry

    def _build(self, app: Flask, state: AppState) -> Batcher[T, U]:
        if state.closed:
            raise BatcherClosed(f"Microbatch was closed on the Flask app {app.name!r}; it accepts no calls")
        settings: dict[str, Any] = {setting: app.config[key] for key, (setting, _) in CONFIG.items()}
        settings["name"] = f"{app.name}.{self.__name__}"
        settings.update(self._options)
        try:
            batcher: Batcher[T, U] = Batcher(_in_app_context(self._fn, app), **settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"bad batching settings for {self.__name__}() on the Flask app {app.name!r}: {exc} "
                "(set by the MICROBATCH_* config keys, overridden by the @mb.batch(...) arguments)"
            ) from exc
        state.batchers[self] = batcher
        return batcher


def _in_app_context(fn: Callable[[list[Any]], Any], app: Flask) -> Callable[[list[Any]], Any]:
    """``fn`` run inside ``app``'s context, so a batch function can reach ``current_app`` on the worker."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):

        async def run_async(items: list[Any]) -> Any:
            with app.app_context():
                return await fn(items)

        return run_async

    def run(items: list[Any]) -> Any:
        with app.app_context():
            return fn(items)

    return run
