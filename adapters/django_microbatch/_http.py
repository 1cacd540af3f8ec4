"""Django's side of the shared HTTP mapping (:mod:`microbatch.web`): the request's time limit and error responses."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase, JsonResponse

from microbatch.web import HTTP_ERRORS, ErrorResponse, RequestTimeout

from ._conf import conf

__all__ = ["HTTP_ERRORS", "answer", "json_error", "request_timeout"]

_TIMEOUT_ATTR = "_microbatch_timeout"  # where MicrobatchMiddleware leaves the request's RequestTimeout


def json_error(response: ErrorResponse) -> JsonResponse:
    """``response`` as a JsonResponse ``{"error": "..."}`` with its status and headers."""
    answer = JsonResponse(response.body, status=response.status)
    for name, value in response.headers.items():
        answer[name] = value
    return answer


def request_timeout(request: HttpRequest) -> RequestTimeout:
    """The request's time limit from ``settings.MICROBATCH_TIMEOUT_HEADER``, read once and kept on the request."""
    header = conf.MICROBATCH_TIMEOUT_HEADER
    timeout = RequestTimeout.read(None if header is None else request.headers.get(header), header)
    setattr(request, _TIMEOUT_ATTR, timeout)
    return timeout


def default_answer(request: HttpRequest, exc: Exception) -> tuple[ErrorResponse, HttpResponseBase] | None:
    """The default :class:`ErrorResponse` for ``exc`` and its rendering (``settings.MICROBATCH_ERROR_HANDLER``'s
    or the JSON body); None for an exception that is not one of :data:`HTTP_ERRORS`."""
    timeout: RequestTimeout = getattr(request, _TIMEOUT_ATTR, RequestTimeout(None))
    response = timeout.response_for(exc)
    if response is None:
        return None
    handler = conf.MICROBATCH_ERROR_HANDLER
    return response, (json_error(response) if handler is None else handler(request, exc, response))


def answer(request: HttpRequest, exc: Exception) -> HttpResponseBase | None:
    """The response for a batcher error raised while handling ``request``, or None for other exceptions."""
    found = default_answer(request, exc)
    return None if found is None else found[1]
