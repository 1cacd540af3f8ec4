"""Django's side of the shared HTTP mapping (:mod:`microbatch.web`): JSON responses for batcher errors."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from microbatch.web import HTTP_ERRORS, TIMEOUT_HEADER, ErrorResponse, error_response, parse_request_timeout

__all__ = ["HTTP_ERRORS", "json_error", "json_error_for", "request_timeout"]


def json_error(response: ErrorResponse) -> JsonResponse:
    """``response`` as a JsonResponse ``{"error": "..."}`` with its status and headers."""
    answer = JsonResponse(response.body, status=response.status)
    for name, value in response.headers.items():
        answer[name] = value
    return answer


def json_error_for(exc: BaseException) -> JsonResponse | None:
    """The JSON answer for one of :data:`HTTP_ERRORS`, or None for other exceptions."""
    response = error_response(exc)
    return None if response is None else json_error(response)


def request_timeout(request: HttpRequest) -> float | None:
    """The request's budget from ``X-Request-Timeout`` (seconds); ValueError unless a number > 0."""
    return parse_request_timeout(request.headers.get(TIMEOUT_HEADER))
