"""The :class:`Microbatch` Flask extension: per-app registration, request deadlines, error responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar, Unpack

from flask import Flask, Response, g, jsonify, request

from microbatch import deadline
from microbatch.web import HTTP_ERRORS, TIMEOUT_HEADER, ErrorResponse, error_response, parse_request_timeout

from ._batched import CONFIG, EXTENSION_KEY, AppState, BatchedFunction, BatchOptions, check_app, state_of

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
        self._functions: list[BatchedFunction[Any, Any]] = []  # decorated so far, checked by init_app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, the ``X-Request-Timeout`` deadline, and error responses
        (Overloaded -> 503 with Retry-After, DeadlineExceeded -> 504, BatcherClosed -> 503,
        ItemTooLarge -> 413: :func:`microbatch.web.error_response`).

        Checks the ``MICROBATCH_*`` config now, alone and with the options of every function this
        instance decorated so far, and raises ValueError naming the key and the fix; functions
        decorated later have their arguments checked when decorated.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'Microbatch' instance has already been registered on this Flask app. "
                "Import and use that instance instead of calling init_app again."
            )
        for key, (_, default) in CONFIG.items():
            app.config.setdefault(key, default)
        check_app(app, self._functions)
        app.extensions[EXTENSION_KEY] = AppState(self)
        app.before_request(_enter_deadline)
        app.teardown_request(_exit_deadline)
        for error in HTTP_ERRORS:
            app.register_error_handler(error, _error_for)

    def batch(
        self, **options: Unpack[BatchOptions]
    ) -> Callable[
        [Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]]], BatchedFunction[T, U]
    ]:
        """Decorator: ``fn(items) -> outputs`` becomes a :class:`BatchedFunction` called one item at a time."""

        def decorate(
            fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]],
        ) -> BatchedFunction[T, U]:
            function = BatchedFunction(self, fn, options)
            self._functions.append(function)
            return function

        return decorate

    def close(self, app: Flask, *, drain: bool = True) -> None:
        """Close ``app``'s batchers, running what is queued unless ``drain`` is False; blocks until done.

        Later calls in that app raise BatcherClosed (a 503 in a request).
        """
        state_of(app, self).close(drain)


def _enter_deadline() -> Response | None:
    try:
        seconds = parse_request_timeout(request.headers.get(TIMEOUT_HEADER))
    except ValueError as exc:
        return _json(ErrorResponse(400, str(exc)))
    if seconds is None:
        return None
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


def _error_for(exc: Exception) -> Response:
    response = error_response(exc)
    if response is None:  # only HTTP_ERRORS are registered, each of which has an answer
        raise exc
    return _json(response)


def _json(response: ErrorResponse) -> Response:
    answer = jsonify(response.body)
    answer.status_code = response.status
    answer.headers.update(response.headers)
    return answer
