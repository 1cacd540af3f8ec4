"""HTTP mapping shared by the view mixin and the middleware: batcher errors and the request deadline header."""

from __future__ import annotations

import math

from django.http import HttpRequest, JsonResponse

from microbatch import BatcherClosed, DeadlineExceeded, Overloaded

__all__ = ["MAPPED_ERRORS", "TIMEOUT_HEADER", "BadTimeout", "bad_request", "error_response", "request_timeout"]

# The batcher's errors that describe the server's state, not a bug: each has a status. Others pass through.
MAPPED_ERRORS = (Overloaded, DeadlineExceeded, BatcherClosed)

TIMEOUT_HEADER = "X-Request-Timeout"


class BadTimeout(ValueError):
    """Raised when the ``X-Request-Timeout`` header is not a number of seconds > 0."""


def error_response(exc: Overloaded | DeadlineExceeded | BatcherClosed) -> JsonResponse:
    """503 (with ``Retry-After`` when overloaded) or 504, with a JSON body ``{"error": "..."}``."""
    if isinstance(exc, DeadlineExceeded):
        return JsonResponse({"error": str(exc)}, status=504)
    response = JsonResponse({"error": str(exc)}, status=503)
    if isinstance(exc, Overloaded):
        # Retry-After takes whole seconds; 0 would invite an immediate retry into the same queue.
        response["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def request_timeout(request: HttpRequest) -> float | None:
    """The request's time budget from ``X-Request-Timeout`` (seconds), or None without the header."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise BadTimeout(f"{TIMEOUT_HEADER} must be a number of seconds > 0, got {raw!r}")
    return seconds


def bad_request(exc: BadTimeout) -> JsonResponse:
    """400 with a JSON body ``{"error": "..."}``."""
    return JsonResponse({"error": str(exc)}, status=400)
