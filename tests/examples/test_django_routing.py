"""The Django example sends each request to the views that suit its server: sync views under WSGI (a
thread per request, which can block on the batcher), async views under ASGI (which await the batcher
on the event loop, with no hop to a worker thread)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.test import AsyncClient, Client


def test_wsgi_requests_reach_the_sync_view_and_asgi_requests_the_async_one(django_project: Any) -> None:
    from examples.django_app import views

    with django_project("batched"):
        wsgi = Client().get("/embed")  # Django's test Client runs the WSGI handler's request path
        asgi = asyncio.run(AsyncClient().get("/embed"))  # and AsyncClient the ASGI handler's
        # resolver_match resolves lazily, against the settings of the moment: read it inside the block.
        assert wsgi.resolver_match.func.view_class is views.EmbedView
        assert asgi.resolver_match.func.view_class is views.AsyncEmbedView
    for response in (wsgi, asgi):
        assert response.status_code == 405
        assert response["Allow"] == "POST, OPTIONS"
        assert response.json() == {"error": "method GET is not allowed on /embed"}
