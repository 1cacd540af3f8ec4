"""Send each request to the views that suit its server: sync views under WSGI, async views under ASGI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

__all__ = ["ServerViews"]

WSGI_URLCONF = "examples.django_app.urls_wsgi"


class ServerViews:
    """Route WSGI requests to :mod:`.urls_wsgi` (sync views); ASGI requests keep ``ROOT_URLCONF`` (async views).

    Under WSGI each request has a thread of its own, so a sync view can block on the batcher; under
    ASGI a sync view would cost a hop to a worker thread and back per request, while an async view
    awaits the batcher on the event loop. The middleware chain is sync under WSGI and async under
    ASGI, and this middleware serves both without an adapter hop (``request.urlconf`` is Django's
    documented per-request override).
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
            return self.get_response(request)
        request.urlconf = WSGI_URLCONF
        return self.get_response(request)
