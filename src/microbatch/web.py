"""Framework-neutral HTTP helpers the web adapters share, so that every framework answers alike.

No web framework is imported here: each adapter turns an :class:`ErrorResponse` into its own
response type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._errors import BatcherClosed, DeadlineExceeded, ItemTooLarge, Overloaded
from ._remote_errors import RedisUnavailable

__all__ = ["HTTP_ERRORS", "TIMEOUT_HEADER", "ErrorResponse", "error_response", "parse_request_timeout"]

TIMEOUT_HEADER = "X-Request-Timeout"

#: The errors that describe the server's state or the client's input rather than a bug: each has a status.
HTTP_ERRORS = (Overloaded, DeadlineExceeded, BatcherClosed, ItemTooLarge, RedisUnavailable)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """What to answer: a status, extra headers, and the JSON body ``{"error": message}``."""

    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.error}


def error_response(exc: BaseException) -> ErrorResponse | None:
    """The HTTP answer for one of :data:`HTTP_ERRORS`, or None for any other exception.

    ``Overloaded`` is 503 with ``Retry-After`` in whole seconds, at least 1 (0 would invite a retry
    into the same full queue); ``BatcherClosed`` 503; ``RedisUnavailable`` (a remote batcher's broker
    is down) 503; ``DeadlineExceeded`` 504; ``ItemTooLarge`` 413, since the client sent more than
    one batch can hold.
    """
    if isinstance(exc, Overloaded):
        return ErrorResponse(503, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
    if isinstance(exc, (BatcherClosed, RedisUnavailable)):
        return ErrorResponse(503, str(exc))
    if isinstance(exc, DeadlineExceeded):
        return ErrorResponse(504, str(exc))
    if isinstance(exc, ItemTooLarge):
        return ErrorResponse(413, str(exc))
    return None


def parse_request_timeout(value: str | bytes | None) -> float | None:
    """Seconds from an ``X-Request-Timeout`` header value; None when absent.

    Raises ValueError, with a message fit for a 400 response, unless it is a finite number > 0.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"{TIMEOUT_HEADER} must be a number of seconds > 0, got {text!r}")
    return seconds
