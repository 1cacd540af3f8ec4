"""What ``@mb.batch(...)`` returns, and the per-app state it finds its batcher in."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar, overload

from flask import Flask, current_app, has_app_context

from microbatch import Batcher, BatcherClosed, BatcherOptions, Stats, SupportsBatching
from microbatch._options import OPTIONS, check_option, resolve
from microbatch._worker import is_async_callable

from ._remote import REMOTE_KEY, check_remote, remote_batcher, remote_url

__all__ = ["CONFIG", "EXTENSION_KEY", "AppState", "BatchOptions", "BatchedFunction", "check_app", "state_of"]

T = TypeVar("T")
U = TypeVar("U")

EXTENSION_KEY = "microbatch"
# App config key -> (option, default), for every option that can be set app-wide: derived from the
# engine's option schema, so a new engine option gets its MICROBATCH_* key without an edit here.
CONFIG: dict[str, tuple[str, object]] = {
    option.config_key: (name, option.default) for name, option in OPTIONS.items() if option.app_wide
}


class BatchOptions(BatcherOptions, total=False):
    """Arguments of ``@mb.batch(...)``: every :class:`microbatch.Batcher` option; each one given
    overrides the app's ``MICROBATCH_*`` config."""


def check_app(app: Flask, functions: list[BatchedFunction[Any, Any]]) -> None:
    """Check ``app``'s ``MICROBATCH_*`` config, alone and with each function's options; ValueError naming the fix."""
    for key, (name, _) in CONFIG.items():
        try:
            check_option(name, app.config[key])
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"bad batching config on the Flask app {app.name!r}: {key} = {app.config[key]!r}: {exc}; "
                f"set app.config[{key!r}] to a valid value (default {CONFIG[key][1]!r})"
            ) from exc
    check_remote(app.config.get(REMOTE_KEY), app.name)
    for function in functions:
        function.settings(app)


class AppState:
    """What ``init_app`` keeps in ``app.extensions["microbatch"]``: its owner and the app's batchers.

    Nothing here refers to the app (the batch functions hold it weakly), so an app dropped by its
    factory's caller is collected like any object; its batchers' workers are then closed.
    """

    __slots__ = ("__weakref__", "batchers", "closed", "lock", "owner")

    def __init__(self, owner: object, app: Flask) -> None:
        self.owner = owner  # the Microbatch instance that registered the app
        self.lock = threading.Lock()  # held only to create a batcher, never to look one up
        self.batchers: dict[BatchedFunction[Any, Any], SupportsBatching[Any, Any]] = {}
        self.closed = False
        _open_states.add(self)
        weakref.finalize(app, _close_when_collected, self, app.name)

    def close(self, drain: bool) -> None:
        with self.lock:
            self.closed = True
            batchers = list(self.batchers.values())
        for b in batchers:
            b.close(drain=drain)


_open_states: weakref.WeakSet[AppState] = weakref.WeakSet()


def _close_when_collected(state: AppState, name: str) -> None:
    # Runs inside garbage collection, on whatever thread triggered it (maybe a worker holding its
    # batcher's lock): closing there could deadlock, so a short-lived thread does it. Nothing can
    # still be queued: every caller held the app through its app context.
    threading.Thread(target=state.close, args=(True,), name=f"microbatch-flask-release-{name}", daemon=True).start()


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
    config and the decorator's arguments, so app factories and several apps in one process work; or,
    when the app's ``MICROBATCH_REMOTE`` names a Redis URL for it, a
    :class:`microbatch.remote.RemoteBatcher` calling the hosts that serve its batcher name.
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
        self.__name__: str = getattr(fn, "__name__", type(fn).__name__)
        for name, value in options.items():  # each argument alone; with the app's config at init_app
            try:
                check_option(name, value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"bad @mb.batch(...) argument for {self.__name__}(): {exc}") from exc
        self._options = options

    def __call__(self, item: T, *, timeout: float | None = None) -> U:
        """Run ``item`` in a batch and return its output, blocking this thread only.

        ``timeout`` (seconds) defaults to the app's ``MICROBATCH_TIMEOUT``; a request's
        ``X-Request-Timeout`` applies on top.
        """
        return self._current()(item, timeout=timeout)

    async def acall(self, item: T, *, timeout: float | None = None) -> U:
        """Async :meth:`__call__`, for ``async def`` views."""
        return await self._current().acall(item, timeout=timeout)

    @overload
    def map(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    def map(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    def map(self, items: Iterable[T], *, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Run many items as one request; outputs in input order.

        ``return_exceptions`` as in :meth:`microbatch.Batcher.map`: a failing item's exception in its place
        (a remote batcher's too: the host sends each failed item's error back beside the other results).
        """
        return self._current().map(items, timeout=timeout, return_exceptions=return_exceptions)

    @overload
    async def amap(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    async def amap(
        self, items: Iterable[T], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    async def amap(
        self, items: Iterable[T], *, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Async :meth:`map`."""
        return await self._current().amap(items, timeout=timeout, return_exceptions=return_exceptions)

    @property
    def batcher(self) -> SupportsBatching[T, U]:
        """The current app's batcher for this function (a RemoteBatcher when the app sends it to hosts)."""
        return self._current()

    @property
    def stats(self) -> Stats:
        """The current app's batcher's :class:`microbatch.Stats`."""
        return self._current().stats

    def __repr__(self) -> str:
        return f"<BatchedFunction {self.__name__}>"

    def _current(self) -> SupportsBatching[T, U]:
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

    def _build(self, app: Flask, state: AppState) -> SupportsBatching[T, U]:
        if state.closed:
            raise BatcherClosed(f"Microbatch was closed on the Flask app {app.name!r}; it accepts no calls")
        settings = self.settings(app)
        url = remote_url(app.config.get(REMOTE_KEY), settings["name"])
        batcher: SupportsBatching[T, U] = (
            Batcher(_in_app_context(self._fn, weakref.ref(app)), **settings) if url is None
            else remote_batcher(settings["name"], url, settings)
        )
        state.batchers[self] = batcher
        return batcher

    def settings(self, app: Flask) -> dict[str, Any]:
        """The batcher options for ``app``: its config, overridden by the decorator's arguments, checked."""
        settings: dict[str, Any] = {setting: app.config.get(key, default) for key, (setting, default) in CONFIG.items()}
        settings["name"] = f"{app.name}.{self.__name__}"
        settings.update(self._options)
        try:
            resolve(settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"bad batching settings for {self.__name__}() on the Flask app {app.name!r}: {exc} "
                "(set by the MICROBATCH_* config keys, overridden by the @mb.batch(...) arguments)"
            ) from exc
        return settings


def _in_app_context(fn: Callable[[list[Any]], Any], app_ref: weakref.ref[Flask]) -> Callable[[list[Any]], Any]:
    """``fn`` run inside the app's context, so a batch function can reach ``current_app`` on the worker.

    The app is held weakly: the worker thread must not keep a discarded app (and its batchers) alive.
    """

    def app() -> Flask:
        found = app_ref()
        if found is None:  # every caller holds the app, so only a call made without one gets here
            raise BatcherClosed("the Flask app of this batch function was garbage-collected")
        return found

    if is_async_callable(fn):  # the engine's own test, so both agree on which worker loop runs fn

        async def run_async(items: list[Any]) -> Any:
            with app().app_context():
                return await fn(items)

        return run_async

    def run(items: list[Any]) -> Any:
        with app().app_context():
            return fn(items)

    return run
