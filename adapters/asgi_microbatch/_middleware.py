"""BatchingMiddleware: shares batchers with an ASGI app and does the web side of using them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from microbatch import ColumnBatcher, SupportsBatching
from microbatch.web import TIMEOUT_HEADER

from ._exchange import Disconnects, ErrorHandler, Exchange, HangUpCounter
from ._lifespan import Lifespan
from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["BatchingMiddleware"]


class BatchingMiddleware:
    """Hands ``batchers`` to every HTTP and WebSocket scope as ``scope["state"]["batchers"]``
    (``request.state.batchers``) and, when it ``owns_batchers`` (the default), starts them at
    lifespan startup and drains them at shutdown.

    Pass ``owns_batchers=False`` when something else closes them: a batcher shared by several apps
    (let one own it), a module-level app started more than once (one ``with TestClient(app)`` per
    test), a mounted sub-app. Such batchers start on their first call and are never closed here.

    For HTTP it also applies the ``timeout_header`` (``X-Request-Timeout``; None: ignore it) as a
    :func:`microbatch.deadline` on every batcher call of the request, cancels the app quietly when
    the client hangs up before the response starts (mid-body or while waiting; counted in
    :meth:`statistics`), and turns batcher errors into JSON responses through
    :func:`microbatch.web.error_response` if no response has started, or through
    ``error_handler(scope, exc, response)`` when given. Everything else passes through. Plain ASGI,
    not ``BaseHTTPMiddleware``, so the deadline's contextvar reaches the endpoint, threadpool included.
    """

    __slots__ = ("_hang_ups", "app", "batchers", "error_handler", "owns_batchers", "timeout_header")

    def __init__(
        self,
        app: ASGIApp,
        *,
        batchers: Mapping[str, SupportsBatching[Any, Any] | ColumnBatcher[*tuple[Any, ...], Any]],
        owns_batchers: bool = True,
        timeout_header: str | None = TIMEOUT_HEADER,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        for name, batcher in batchers.items():
            if not isinstance(batcher, SupportsBatching):
                raise TypeError(
                    f"batchers[{name!r}] must be a microbatch.Batcher or microbatch.remote.RemoteBatcher, "
                    f"got {type(batcher).__name__}"
                )
        self.app = app
        # A ColumnBatcher is a Batcher called with its function's parameters: the same lifecycle here,
        # while its calls are typed on the object the app keeps (SupportsBatching types one-item calls).
        self.batchers: Mapping[str, SupportsBatching[Any, Any]] = MappingProxyType(
            cast("dict[str, SupportsBatching[Any, Any]]", dict(batchers))
        )
        self.owns_batchers = owns_batchers
        self.timeout_header = timeout_header
        self.error_handler = error_handler
        self._hang_ups = HangUpCounter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            owned = self.batchers.values() if self.owns_batchers else ()
            await Lifespan(owned, receive, send).run(self.app, scope)
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
            await Exchange(scope, receive, send, self._hang_ups).run(self.app, self.timeout_header, self.error_handler)

    def statistics(self) -> Disconnects:
        """How many clients hung up before their response started (each ended quietly, without a traceback)."""
        return self._hang_ups.snapshot()

    def __repr__(self) -> str:
        return (
            f"<BatchingMiddleware batchers={sorted(self.batchers)} owns_batchers={self.owns_batchers} "
            f"timeout_header={self.timeout_header!r} {self._hang_ups!r}>"
        )
