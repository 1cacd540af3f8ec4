"""The :class:`Microbatch` Flask extension: per-app registration, request deadlines, error responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar, Unpack

from flask import Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from microbatch.web import (
    HTTP_ERRORS,
    TIMEOUT_HEADER,
    ErrorResponse,
    RequestTimeout,
    error_response,
)

from ._batched import CONFIG, EXTENSION_KEY, AppState, BatchedFunction, BatchOptions, check_app, state_of
from ._remote import REMOTE_KEY

__all__ = ["Microbatch"]

T = TypeVar("T")
U = TypeVar("U")

_DEADLINE_KEY = "_microbatch_deadline"
TIMEOUT_HEADER_KEY = "MICROBATCH_TIMEOUT_HEADER"

#: ``handler(exc, response)`` -> any Flask view return value: the answer to a batcher error.
ErrorHandler = Callable[[Exception, ErrorResponse], ResponseReturnValue]


class Microbatch:
    """Flask extension: ``@mb.batch(...)`` makes functions whose calls are batched per app.

    ``Microbatch(app)``, or ``mb = Microbatch()`` then ``mb.init_app(app)`` for app factories; one
    instance serves any number of apps and keeps none of them (their state is in
    ``app.extensions["microbatch"]``). Batchers drain at process exit, or on :meth:`close`.
    """

    __slots__ = ("_error_handler", "_functions")

    def __init__(self, app: Flask | None = None) -> None:
        self._functions: list[BatchedFunction[Any, Any]] = []  # decorated so far, checked by init_app
        self._error_handler: ErrorHandler | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: config defaults, the request-timeout header's deadline
        (``MICROBATCH_TIMEOUT_HEADER``, default ``X-Request-Timeout``; None turns it off), and error
        responses (Overloaded -> 503 with Retry-After, DeadlineExceeded -> 504, BatcherClosed -> 503,
        ItemTooLarge -> 413: :func:`microbatch.web.error_response`, or :meth:`error_handler`'s).

        ``MICROBATCH_REMOTE`` (None by default) sends batched functions to model hosts over Redis: a
        URL sends every one, a dict ``{batcher name: URL}`` the ones it names (see
        :mod:`flask_microbatch._remote`).

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
        app.config.setdefault(TIMEOUT_HEADER_KEY, TIMEOUT_HEADER)
        app.config.setdefault(REMOTE_KEY, None)
        check_app(app, self._functions)
        app.extensions[EXTENSION_KEY] = AppState(self, app)
        app.before_request(_enter_deadline)
        app.teardown_request(_exit_deadline)
        for error in HTTP_ERRORS:
            app.register_error_handler(error, self._error_for)

    def error_handler(self, handler: ErrorHandler) -> ErrorHandler:
        """Decorator: ``handler(exc, response)`` answers batcher errors in every app of this instance.

        ``response`` is the default :class:`~microbatch.web.ErrorResponse` (status, headers, a
        client-safe ``error``; ``detail`` is for logs). Return anything a view may return, e.g.
        ``{"detail": response.error}, response.status, response.headers`` for FastAPI-style bodies.
        """
        self._error_handler = handler
        return handler

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

    def _error_for(self, exc: Exception) -> ResponseReturnValue:
        entry: tuple[ExitStack, RequestTimeout] | None = g.get(_DEADLINE_KEY)
        response = error_response(exc) if entry is None else entry[1].response_for(exc)
        if response is None:  # only HTTP_ERRORS are registered, each of which has an answer
            raise exc
        return _json(response) if self._error_handler is None else self._error_handler(exc, response)

    def __repr__(self) -> str:
        return f"<Microbatch error_handler={self._error_handler!r}>"


def _enter_deadline() -> None:
    header: str | None = current_app.config[TIMEOUT_HEADER_KEY]
    timeout = RequestTimeout.read(None if header is None else request.headers.get(header), header)
    # Entered here and left in teardown, in the same context: the view (async ones run in a copy
    # of it) sees the deadline, and the worker thread of the next request does not. A malformed
    # value fails only the request's first batcher call, as a 400 (RequestTimeout).
    stack = ExitStack()
    stack.enter_context(timeout.deadline())
    setattr(g, _DEADLINE_KEY, (stack, timeout))


def _exit_deadline(exc: BaseException | None) -> None:
    entry: tuple[ExitStack, RequestTimeout] | None = g.pop(_DEADLINE_KEY, None)
    if entry is not None:
        entry[0].close()


def _json(response: ErrorResponse) -> Response:
    answer = jsonify(response.body)
    answer.status_code = response.status
    answer.headers.update(response.headers)
    return answer
