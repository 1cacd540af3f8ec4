"""The lifespan conversation: the batchers' start and drain wrapped around the app's own lifespan."""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from collections.abc import Iterable
from typing import Any

from microbatch import BatcherClosed, SupportsBatching

from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Lifespan"]

logger = logging.getLogger("asgi_microbatch")

# Once the app has sent one of these, it has finished the protocol and the middleware adds nothing.
_FINISHED = frozenset({"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"})

# The batchers owned by a lifespan that is running now, in any app of the process: two owners would
# each drain a batcher the other still serves.
_running: weakref.WeakSet[SupportsBatching[Any, Any]] = weakref.WeakSet()


class Lifespan:
    """One run of the lifespan protocol between the server, the middleware and the wrapped app.

    ``batchers`` are the ones the middleware owns (none with ``owns_batchers=False``). They start
    before the app's startup and drain before its shutdown, so queued work still finds whatever the
    app's lifespan set up (a model, a pool). An app that does not take part (it
    raises on the lifespan scope, or returns, without answering startup) is left alone, as the ASGI
    spec asks of servers, and the middleware answers the server itself. Failures are reported the
    way Starlette's ``Router.lifespan`` does: a ``lifespan.*.failed`` message with the traceback,
    then the exception is re-raised. A failed drain is raised from the app's ``receive()`` of
    ``lifespan.shutdown``, so the app reports it like any failure of its own shutdown.
    """

    __slots__ = ("batchers", "drained", "pending", "receive", "replied", "send", "started")

    def __init__(self, batchers: Iterable[SupportsBatching[Any, Any]], receive: Receive, send: Send) -> None:
        self.batchers = list(batchers)
        self.started: list[SupportsBatching[Any, Any]] = []  # what this run started, so what its drain closes
        self.receive = receive
        self.send = send
        self.pending: Message | None = None  # the server's startup message, read before the app runs
        self.replied = ""  # the type of the last lifespan message sent to the server
        self.drained = False

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        self.pending = await self.receive()
        try:
            for batcher in self.batchers:
                self.start(batcher)
        except Exception:
            await self.drain()  # the ones already started would never be closed
            await self.send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
            raise
        try:
            await app(scope, self.app_receive, self.app_send)
        except Exception:
            if self.replied == "lifespan.startup.complete":  # the app's shutdown broke without saying so
                await self.finish(traceback.format_exc())
            if self.replied:
                raise
            logger.info("the app does not support the ASGI lifespan protocol; BatchingMiddleware answers alone")
        if self.replied not in _FINISHED:
            await self.finish(None)

    def start(self, batcher: SupportsBatching[Any, Any]) -> None:
        if batcher in _running:
            raise RuntimeError(
                f"batcher {batcher.name!r} is already owned by a running BatchingMiddleware of another app, "
                "whose shutdown would close it under this one: pass owns_batchers=False to every "
                "BatchingMiddleware but the one that should start and drain it"
            )
        if batcher.closed:
            raise BatcherClosed(
                f"BatchingMiddleware cannot start batcher {batcher.name!r}: it is closed, drained by an earlier "
                "lifespan of an app that owns it (e.g. a previous `with TestClient(app)`), and a closed batcher "
                "cannot be restarted. Build the batchers in an app factory so each app run gets new ones, or "
                "pass BatchingMiddleware(..., owns_batchers=False) and close the batchers yourself"
            )
        batcher.start()
        _running.add(batcher)
        self.started.append(batcher)

    async def app_receive(self) -> Message:
        if self.pending is not None:
            message, self.pending = self.pending, None
            return message
        message = await self.receive()  # lifespan.shutdown
        await self.drain()
        return message

    async def app_send(self, message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            await self.drain()  # the server exits: nothing will use the batchers
        self.replied = message["type"]
        await self.send(message)

    async def finish(self, error: str | None) -> None:
        """Complete the protocol for an app that stopped answering before its end."""
        if not self.replied:
            await self.send({"type": "lifespan.startup.complete"})
        if not self.drained:
            await self.receive()  # lifespan.shutdown
            await self.drain()
        self.replied = "lifespan.shutdown.complete" if error is None else "lifespan.shutdown.failed"
        await self.send({"type": self.replied} if error is None else {"type": self.replied, "message": error})

    async def drain(self) -> None:
        """Close every batcher this run started, in parallel, after running what is queued."""
        self.drained = True
        try:
            await asyncio.gather(*(b.aclose(drain=True) for b in self.started))
        finally:
            for batcher in self.started:
                _running.discard(batcher)
