"""One HTTP request through BatchingMiddleware: its deadline, its client's hang-ups, its error answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from microbatch.web import HTTP_ERRORS, ErrorResponse, RequestTimeout

from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Disconnects", "ErrorHandler", "Exchange", "HangUpCounter"]

logger = logging.getLogger("asgi_microbatch")

#: ``error_handler(scope, exc, response)``: the answer to a batcher error, given the default one.
#: Return an :class:`~microbatch.web.ErrorResponse` or any ASGI response (Starlette's ``JSONResponse``).
ErrorHandler = Callable[[Scope, Exception, ErrorResponse], "ErrorResponse | ASGIApp"]


@dataclass(frozen=True, slots=True)
class Disconnects:
    """Clients that hung up before their response started, and were ended quietly (no traceback)."""

    while_sending_body: int  # mid-upload: the app never got the whole body
    while_waiting: int  # after the body: the app was cancelled, and an awaited acall took its items off the queue


class HangUpCounter:
    """The middleware's running counts behind :class:`Disconnects` (touched on its event loop only)."""

    __slots__ = ("while_sending_body", "while_waiting")

    def __init__(self) -> None:
        self.while_sending_body = 0
        self.while_waiting = 0

    def snapshot(self) -> Disconnects:
        return Disconnects(self.while_sending_body, self.while_waiting)

    def __repr__(self) -> str:
        return f"<HangUpCounter while_sending_body={self.while_sending_body} while_waiting={self.while_waiting}>"


class Exchange:
    """One HTTP request's state. The app reads the body straight from the server (keeping its flow
    control); after the body only ``http.disconnect`` can come, so a listener task waits for it, and
    the app's own later ``receive()`` calls share the listener's answer. A hang-up before the
    response starts, mid-body or after, cancels the app: it ends quietly and is counted."""

    __slots__ = ("counter", "hung_up", "listener", "pending", "receive", "scope", "send", "started", "task")

    def __init__(self, scope: Scope, receive: Receive, send: Send, counter: HangUpCounter) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.counter = counter
        self.task = cast("asyncio.Task[Any]", asyncio.current_task())  # runs the app; a hang-up cancels it
        self.pending: Message | None = None  # a message read ahead for the app
        self.listener: asyncio.Task[Message] | None = None
        self.started = False  # the response has started: it is the app's to finish
        self.hung_up = False  # the client left before the response started, and the app was cancelled

    async def run(self, app: ASGIApp, header: str | None, error_handler: ErrorHandler | None) -> None:
        timeout = RequestTimeout.read(None if header is None else _header(self.scope, header.lower().encode()), header)
        try:
            if _bodiless(self.scope):  # the app may never receive(): read its empty body now, to start the watch
                self.pending = await self.app_receive()
            with timeout.deadline():
                await app(self.scope, self.app_receive, self.app_send)
        except asyncio.CancelledError:
            if not (self.hung_up and self.task.uncancel() == 0):
                raise  # a cancellation from elsewhere (the server) goes on
        except HTTP_ERRORS as exc:
            response = timeout.response_for(exc)
            if self.started or response is None:
                raise
            # Through app_send: once the response starts, a hang-up no longer cancels this task.
            await self.answer(exc, response, error_handler)
        finally:
            if self.listener is not None:  # no task of the request outlives it
                await self.stop_listening(self.listener)

    async def stop_listening(self, listener: asyncio.Task[Message]) -> None:
        """Cancel the watch and wait for it to end: awaited directly, which costs far less than ``asyncio.wait``."""
        if listener.done():
            return
        listener.cancel()
        cancelling = self.task.cancelling()
        try:
            await listener
        except asyncio.CancelledError:
            if self.task.cancelling() > cancelling:
                raise  # this task was cancelled meanwhile, not just the listener: that goes on

    async def answer(self, exc: Exception, response: ErrorResponse, error_handler: ErrorHandler | None) -> None:
        custom = response if error_handler is None else error_handler(self.scope, exc, response)
        if isinstance(custom, ErrorResponse):
            await respond(self.app_send, custom)
        else:
            await custom(self.scope, self.app_receive, self.app_send)

    async def app_receive(self) -> Message:
        if self.pending is not None:
            message, self.pending = self.pending, None
            return message
        if self.listener is not None:
            return await asyncio.shield(self.listener)  # an app that stops waiting must not stop ours
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.listener = asyncio.ensure_future(self.listen())
        elif message["type"] == "http.disconnect" and not self.started:
            # Mid-body: cancel the app here rather than hand it the disconnect, which Starlette turns
            # into ClientDisconnect and a logged traceback per aborted upload.
            self.hang_up()
            self.counter.while_sending_body += 1
            await asyncio.sleep(0)  # the cancellation lands here, inside the app's receive()
        return message

    async def app_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def listen(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.started:
            self.hang_up()
            self.counter.while_waiting += 1
        return message

    def hang_up(self) -> None:
        self.hung_up = True
        self.task.cancel()  # a cancelled acall takes its items off the queue
        logger.debug("client hung up before the response to %s %s started", self.scope["method"], self.scope["path"])


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


async def respond(send: Send, response: ErrorResponse) -> None:
    """Send ``response`` as a JSON response."""
    body = json.dumps(response.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
