"""Framework-neutral HTTP helpers the web adapters share, so that every framework answers alike.

No web framework is imported here: each adapter turns an :class:`ErrorResponse` into its own
response type.
"""

from __future__ import annotations

import logging
import math
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ._deadline import deadline
from ._errors import (
    BatcherClosed,
    CircuitOpen,
    DeadlineExceeded,
    ItemTooLarge,
    MicrobatchError,
    Overloaded,
)
from ._remote_errors import RedisUnavailable

__all__ = [
    "HTTP_ERRORS",
    "TIMEOUT_HEADER",
    "ErrorResponse",
    "RequestTimeout",
    "error_response",
    "parse_request_timeout",
]

logger = logging.getLogger("microbatch.web")

TIMEOUT_HEADER = "X-Request-Timeout"

# The one mapping: exception -> (status, the message a client sees). The exception's own message
# names settings (max_queue_size=..., max_batch_tokens=...) and batcher names; it goes to the log only.
# The first matching row wins: a subclass comes before its base.
_MAPPING: tuple[tuple[type[MicrobatchError], int, str], ...] = (
    (CircuitOpen, 503, "the model is failing and the server is not taking work for it: retry after the number "
     "of seconds in Retry-After"),
    (Overloaded, 503, "the server is overloaded: retry after the number of seconds in Retry-After"),
    (BatcherClosed, 503, "the server is shutting down and accepts no new work: retry the request"),
    (DeadlineExceeded, 504, "the request's time limit passed before its result was ready"),
    (ItemTooLarge, 413, "an input of the request is too large to process: send a smaller one"),
    (RedisUnavailable, 503, "the model service is unreachable: retry the request shortly"),
)

#: The errors that describe the server's state or the client's input rather than a bug: each has a status.
HTTP_ERRORS: tuple[type[MicrobatchError], ...] = tuple(error for error, _, _ in _MAPPING)

# A number of seconds, optionally with a unit: "2.5", "5s", "5000ms", "1.5 s" (case-insensitive).
_TIMEOUT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """What to answer: a status, extra headers, and the JSON body ``{"error": error}``.

    ``error`` is safe to show a client; ``detail`` is the exception's own message, for logs only
    (it names settings and batchers).
    """

    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.error}


def error_response(exc: BaseException) -> ErrorResponse | None:
    """The HTTP answer for one of :data:`HTTP_ERRORS` (logged at INFO with its detail), or None for any other.

    ``Overloaded`` and its ``CircuitOpen`` (the circuit breaker is open) are 503 with ``Retry-After``
    in whole seconds, at least 1 (0 would invite a retry into the same full queue); ``BatcherClosed``
    503; ``RedisUnavailable`` (a remote batcher's broker is down) 503; ``DeadlineExceeded`` 504;
    ``ItemTooLarge`` 413, since the client sent more than one batch can hold.
    """
    for error, status, message in _MAPPING:
        if isinstance(exc, error):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if isinstance(exc, Overloaded) else {}
            response = ErrorResponse(status, message, headers, str(exc))
            logger.info("answering %d to %s: %s", status, type(exc).__name__, response.detail)
            return response
    return None


def parse_request_timeout(value: str | bytes | None, header: str = TIMEOUT_HEADER) -> float | None:
    """Seconds from a request-timeout header value (``2.5``, ``5s``, ``5000ms``); None when absent.

    Raises ValueError, with a message fit for a 400 response that names ``header``, unless it is a
    finite time > 0.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _TIMEOUT.fullmatch(text)
    seconds = math.nan if match is None else float(match[1]) / (1000 if (match[2] or "").lower() == "ms" else 1)
    if not 0 < seconds < math.inf:
        raise ValueError(
            f"{header} must be a time > 0 in seconds, like 2.5, 5s or 5000ms, got {text!r}: fix or drop the header"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class RequestTimeout:
    """A request's timeout header, read once: the deadline its batcher calls get, or why it is malformed.

    A malformed value does not fail the request at once: routes that make no batcher call
    (``/healthz``) answer as usual. Its :meth:`deadline` has no time left, so the request's first
    batcher call fails at submission (nothing is queued; the batcher counts it ``rejected``), and
    :meth:`response_for` turns that failure into a 400 that quotes the value.
    """

    seconds: float | None
    problem: str | None = None  # the 400 message when the value is malformed

    @classmethod
    def read(cls, value: str | bytes | None, header: str | None = TIMEOUT_HEADER) -> RequestTimeout:
        """From the header's value (None when absent, or when ``header`` is None: the adapter ignores it)."""
        if header is None:
            return cls(None)
        try:
            return cls(parse_request_timeout(value, header))
        except ValueError as exc:
            return cls(None, str(exc))

    def deadline(self) -> AbstractContextManager[None]:
        """The :func:`microbatch.deadline` to run the request under."""
        return deadline(0 if self.problem is not None else self.seconds)

    def response_for(self, exc: BaseException) -> ErrorResponse | None:
        """:func:`error_response`, except that a deadline failure of a malformed header is that header's 400."""
        if self.problem is not None and isinstance(exc, DeadlineExceeded):
            logger.info("answering 400 to a malformed request-timeout header: %s", self.problem)
            return ErrorResponse(400, self.problem, {}, self.problem)
        return error_response(exc)
