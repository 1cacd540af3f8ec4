"""``MicrobatchMiddleware``: the request deadline header, and error mapping for function views."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ._http import answer, request_timeout

__all__ = ["MicrobatchMiddleware"]


class MicrobatchMiddleware:
    """Apply the request's time limit to every batcher call it makes, and map batcher errors to responses.

    The header (``settings.MICROBATCH_TIMEOUT_HEADER``, default ``X-Request-Timeout``, None: off;
    ``2.5``, ``5s``, ``5000ms``) sets a :func:`microbatch.deadline` around the view; a malformed value
    fails only the view's batcher calls, with a 400. ``Overloaded``/``BatcherClosed`` raised by any
    view become 503 (``Retry-After`` when overloaded), ``DeadlineExceeded`` 504 and ``ItemTooLarge``
    413, with a JSON body ``{"error": "..."}`` (:func:`microbatch.web.error_response`), or what
    ``settings.MICROBATCH_ERROR_HANDLER`` returns. Serves sync
    (WSGI) and async (ASGI) middleware chains alike, so Django never adapts it across threads.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        with request_timeout(request).deadline():
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # The contextvar follows the await into async views, and asgiref copies it into sync ones.
        with request_timeout(request).deadline():
            return await self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        # A view's exception never reaches __call__ (Django turns it into a response further in), hence this hook.
        return answer(request, exception)
