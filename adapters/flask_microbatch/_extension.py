"""The :class:`Microbatch` Flask extension: per-app registration, request deadlines, error responses."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import TypeVar, Unpack

from flask import Flask, Response, g, jsonify, request

from microbatch import BatcherClosed, DeadlineExceeded, Overloaded, deadline

from ._batched import CONFIG, EXTENSION_KEY, AppState, BatchedFunction, BatchOptions, state_of

__all__ = ["Microbatch"]

T = TypeVar("T")
U = TypeVar("U")

_DEADLINE_KEY = "_microbatch_deadline"


class Microbatch:
    """Flask extension: ``@mb.batch(...)`` makes functions whose calls are batched per app.

    ``Microbatch(app)``, or ``mb = Microbatch()`` then ``mb.init_app(app)`` for app factories; one
    instance serves any number of apps and keeps none of them (their state is in
    ``app.extensions["microbatch"]``). Batchers drain at process exit, or on :meth:`close`.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, the ``X-Request-Timeout`` deadline, and error responses
        (Overloaded -> 503 with Retry-After, DeadlineExceeded -> 504, BatcherClosed -> 503)."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'Microbatch' instance has already been registered on this Flask app. "
                "Import and use that instance instead of calling init_app again."
            )
        for key, (_, default) in CONFIG.items():
            app.config.setdefault(key, default)
        app.extensions[EXTENSION_KEY] = AppState(self)
        app.before_request(_enter_deadline)
        app.teardown_request(_exit_deadline)
        app.register_error_handler(Overloaded, _overloaded)
        app.register_error_handler(DeadlineExceeded, lambda exc: _error(504, str(exc)))
        app.register_error_handler(BatcherClosed, lambda exc: _error(503, str(exc)))

    def batch(
        self, **options: Unpack[BatchOptions]
    ) -> Callable[
        [Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]]], BatchedFunction[T, U]
    ]:
        """Decorator: ``fn(items) -> outputs`` becomes a :class:`BatchedFunction` called one item at a time."""

        def decorate(
            fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]],
        ) -> BatchedFunction[T, U]:
            return BatchedFunction(self, fn, options)

        return decorate

    def close(self, app: Flask, *, drain: bool = True) -> None:
        """Close ``app``'s batchers, running what is queued unless ``drain`` is False; blocks until done.

        Later calls in that app raise BatcherClosed (a 503 in a request).
        """
        state_of(app, self).close(drain)


def _enter_deadline() -> Response | None:
    header = request.headers.get("X-Request-Timeout")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        return _error(400, f"X-Request-Timeout must be a number of seconds >= 0, got {header!r}")
    # Entered here and left in teardown, in the same context: the view (async ones run in a copy
    # of it) sees the deadline, and the worker thread of the next request does not.
    stack = ExitStack()
    stack.enter_context(deadline(seconds))
    setattr(g, _DEADLINE_KEY, stack)
    return None


def _exit_deadline(exc: BaseException | None) -> None:
    stack: ExitStack | None = g.pop(_DEADLINE_KEY, None)
    if stack is not None:
        stack.close()


def _overloaded(exc: Overloaded) -> Response:
    response = _error(503, str(exc))
    response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response
