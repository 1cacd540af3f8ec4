"""get_batcher: a request's way to the batchers BatchingMiddleware shared with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from microbatch import SupportsBatching

__all__ = ["get_batcher"]


class HasScope(Protocol):
    """A request object that carries its ASGI scope (Starlette's and FastAPI's Request and WebSocket)."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


def get_batcher(source: HasScope | Mapping[str, Any], name: str) -> SupportsBatching[Any, Any]:
    """The batcher registered as ``name`` with BatchingMiddleware, found from a request or a raw scope.

    Raises RuntimeError when no BatchingMiddleware wraps the app, and LookupError, listing the
    registered names, when none is called ``name``.
    """
    scope = source.scope if hasattr(source, "scope") else source
    batchers: Mapping[str, SupportsBatching[Any, Any]] | None = scope.get("state", {}).get("batchers")
    if batchers is None:
        raise RuntimeError(
            "no batchers on this request: wrap the app in BatchingMiddleware, e.g. "
            "Starlette(..., middleware=[Middleware(BatchingMiddleware, batchers={...})]) "
            "or app.add_middleware(BatchingMiddleware, batchers={...})"
        )
    try:
        return batchers[name]
    except KeyError:
        known = ", ".join(map(repr, sorted(batchers))) or "none"
        raise LookupError(f"no batcher named {name!r}; BatchingMiddleware has: {known}") from None
