"""ASGI entry point: ``uvicorn examples.django_app.asgi:application`` (async views, one event loop)."""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler

from examples import _api
from examples._embedder import load_model

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

Scope = dict[str, Any]


class BodyLimit:
    """Refuse bodies over :data:`~examples._api.MAX_BODY_BYTES` before Django reads them.

    Django's ASGI handler reads the whole body (into a temporary file) before any view or
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check runs, so a 256 MB upload would be received in full. Here a
    declared ``Content-Length`` over the limit is answered 413 without calling Django, and a streamed
    body is answered 413 once past the limit; Django is then told the client left, which it ends quietly.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            _api.check_declared_length(headers.get(b"content-length"))
        except _api.BadRequest as exc:
            await _refuse(send, exc)
            return
        size = 0

        async def limited_receive() -> Any:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > _api.MAX_BODY_BYTES:
                    await _refuse(send, _api.too_large())
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, send)


async def _refuse(send: Any, exc: _api.BadRequest) -> None:
    body = json.dumps(exc.body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class NoDatabaseASGIHandler(ASGIHandler):  # type: ignore[misc]  # Django is untyped here
    """Django's ASGI handler for a project without a database, such as this one.

    Django gives each request's sync code (its ``request_started``/``request_finished`` receivers and
    ``response.close()``) a new thread of its own, so that database connections stay per request;
    without a database that is a thread started and two thread hand-offs per request for nothing:
    profiled in-process, 1.9 ms of CPU per request of which this was 1.1 ms, beside the event loop and
    the model on the same cores. Here the sync code of every request shares asgiref's one sync
    thread, and Django's database receivers are disconnected (:func:`drop_database_receivers`).
    """

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # Django's own refusal of other scope types
            return
        await self.handle(scope, receive, send)


def drop_database_receivers() -> None:
    """Disconnect the receivers Django connects for database connections when ``DATABASES`` is empty.

    They would run on every request in a thread hop (``sync_to_async``) and find no connection.
    """
    if settings.DATABASES:
        return
    from django.db import close_old_connections, reset_queries

    signals.request_started.disconnect(reset_queries)
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)


django.setup(set_prefix=False)  # what get_asgi_application() does before building its handler
drop_database_receivers()
application = BodyLimit(NoDatabaseASGIHandler())
if settings.EMBED_REMOTE is None:  # else the model runs in the hosts only
    load_model()  # at startup, not in the first request
