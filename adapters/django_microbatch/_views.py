"""``BatchedViewMixin``: a class-based view's access to a shared batcher, and its HTTP error mapping."""

from __future__ import annotations

import inspect
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase

from microbatch import SupportsBatching
from microbatch.web import ErrorResponse

from ._http import HTTP_ERRORS, default_answer
from ._registry import lookup

__all__ = ["BatchedViewMixin"]


class BatchedViewMixin:
    """Give a class-based view the batcher named by ``batcher_name`` from ``settings.MICROBATCH``.

    Put it before ``View`` (or any subclass) in the bases. ``self.get_batcher()`` returns the
    process-wide shared batcher: call it from a sync handler (``self.get_batcher()(item)``, blocks
    this thread only) or await it from an async one (``await self.get_batcher().acall(item)``).
    ``Overloaded`` and ``BatcherClosed`` become 503 (``Retry-After`` when overloaded) and
    ``DeadlineExceeded`` 504, ``ItemTooLarge`` 413, each with a JSON body ``{"error": "..."}``
    (override :meth:`get_error_response` to answer otherwise); other exceptions pass through.
    """

    batcher_name: str | None = None
    view_is_async: bool  # django.views.View's classproperty: are the handlers ``async def``?

    def get_batcher_name(self) -> str:
        """The ``settings.MICROBATCH`` key to use; override to choose per request."""
        if self.batcher_name is None:
            cls = type(self).__qualname__
            raise ImproperlyConfigured(
                f"{cls} is missing the batcher_name attribute. Define {cls}.batcher_name, "
                f"or override {cls}.get_batcher_name()."
            )
        return self.batcher_name

    def get_batcher(self) -> SupportsBatching[Any, Any]:
        """The shared batcher named by :meth:`get_batcher_name`."""
        cls = type(self).__qualname__
        return lookup(self.get_batcher_name(), f"{cls}.batcher_name (or {cls}.get_batcher_name())")

    def get_error_response(
        self, exc: Exception, response: ErrorResponse, default: HttpResponseBase
    ) -> HttpResponseBase:
        """The answer to a batcher error: ``default`` (``settings.MICROBATCH_ERROR_HANDLER``'s, else
        the JSON body). Override per view, e.g. ``JsonResponse({"detail": response.error},
        status=response.status, headers=response.headers)``; ``response.detail`` is for logs only."""
        return default

    def _answer(self, request: HttpRequest, exc: Exception) -> HttpResponseBase:
        found = default_answer(request, exc)
        if found is None:
            raise exc
        return self.get_error_response(exc, *found)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # An async view's handlers return coroutines, whose errors surface only when awaited.
        if self.view_is_async:
            return self._dispatch_async(request, *args, **kwargs)
        try:
            return cast(Any, super()).dispatch(request, *args, **kwargs)
        except HTTP_ERRORS as exc:
            return self._answer(request, exc)

    async def _dispatch_async(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            response = cast(Any, super()).dispatch(request, *args, **kwargs)
            # A mixin further along may answer at once with a plain response (a redirect, a 403).
            return await response if inspect.isawaitable(response) else response
        except HTTP_ERRORS as exc:
            return self._answer(request, exc)
