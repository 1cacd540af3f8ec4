"""BatchingMiddleware: shares batchers with an ASGI app and does the web side of using them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from microbatch import SupportsBatching, deadline
from microbatch.web import HTTP_ERRORS, ErrorResponse, error_response, parse_request_timeout

from ._lifespan import Lifespan
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BatchingMiddleware"]


class BatchingMiddleware:
    """Hands ``batchers`` to every HTTP and WebSocket scope as ``scope["state"]["batchers"]``
    (``request.state.batchers``), starts them at lifespan startup and drains them at shutdown.

    For HTTP it also applies ``X-Request-Timeout`` (seconds) as a :func:`microbatch.deadline` on
    every batcher call of the request (400 unless a number > 0), cancels the app when the client
    hangs up before the response starts (its queued items never reach the model), and turns
    ``Overloaded`` into 503 with ``Retry-After``, ``DeadlineExceeded`` into 504, ``BatcherClosed``
    into 503 and ``ItemTooLarge`` into 413 (:func:`microbatch.web.error_response`), each with a JSON
    body ``{"error": ...}``, if no response has started. Everything else
    passes through. Plain ASGI, not ``BaseHTTPMiddleware``, so the deadline's contextvar reaches
    the endpoint, threadpool included.
    """

    def __init__(self, app: ASGIApp, *, batchers: Mapping[str, SupportsBatching[Any, Any]]) -> None:
        for name, batcher in batchers.items():
            if not isinstance(batcher, SupportsBatching):
                raise TypeError(
                    f"batchers[{name!r}] must be a microbatch.Batcher or microbatch.remote.RemoteBatcher, "
                    f"got {type(batcher).__name__}"
                )
        self.app = app
        self.batchers: Mapping[str, SupportsBatching[Any, Any]] = MappingProxyType(dict(batchers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await Lifespan(self.batchers.values(), receive, send).run(self.app, scope)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        outer = state.get("batchers")  # an outer BatchingMiddleware's: keep them reachable too
        state["batchers"] = self.batchers if outer is None else MappingProxyType({**outer, **self.batchers})
        if kind == "websocket":
            await self.app(scope, receive, send)
        else:
            await _Exchange(scope, receive, send).run(self.app)


class _Exchange:
    """One HTTP request's state. The app reads the body straight from the server (keeping its flow
    control); after the body only ``http.disconnect`` can come, so a listener task waits for it, and
    the app's own later ``receive()`` calls share the listener's answer."""

    __slots__ = ("scope", "receive", "send", "task", "pending", "listener", "started", "hung_up")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.task = cast("asyncio.Task[Any]", asyncio.current_task())  # runs the app; a hang-up cancels it
        self.pending: Message | None = None  # a message read ahead for the app
        self.listener: asyncio.Task[Message] | None = None
        self.started = False  # the response has started: it is the app's to finish
        self.hung_up = False  # the client left before the response started, and the app was cancelled

    async def run(self, app: ASGIApp) -> None:
        try:
            seconds = parse_request_timeout(_header(self.scope, b"x-request-timeout"))
        except ValueError as exc:
            await _respond(self.send, ErrorResponse(400, str(exc)))
            return
        if _bodiless(self.scope):  # the app may never receive(): read its empty body now, to start the watch
            self.pending = await self.app_receive()
        try:
            with deadline(seconds):
                await app(self.scope, self.app_receive, self.app_send)
        except asyncio.CancelledError:
            if not (self.hung_up and self.task.uncancel() == 0):
                raise  # a cancellation from elsewhere (the server) goes on
        except HTTP_ERRORS as exc:
            response = error_response(exc)
            if self.started or response is None:
                raise
            # Through app_send: once the response starts, a hang-up no longer cancels this task.
            await _respond(self.app_send, response)
        finally:
            if self.listener is not None:  # no task of the request outlives it
                self.listener.cancel()
                await asyncio.wait([self.listener])

    async def app_receive(self) -> Message:
        if self.pending is not None:
            message, self.pending = self.pending, None
            return message
        if self.listener is not None:
            return await asyncio.shield(self.listener)  # an app that stops waiting must not stop ours
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.listener = asyncio.ensure_future(self.listen())
        return message

    async def app_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def listen(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.started:
            self.hung_up = True
            self.task.cancel()  # a cancelled acall takes its items off the queue
        return message


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return cast(bytes, value)
    return None


def _bodiless(scope: Scope) -> bool:
    """True for an HTTP/1 request that declares no body (RFC 9112: no Content-Length, no Transfer-Encoding)."""
    if scope.get("http_version") not in ("1.0", "1.1"):
        return False
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is None and (length is None or length.strip() == b"0")


async def _respond(send: Send, response: ErrorResponse) -> None:
    body = json.dumps(response.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
