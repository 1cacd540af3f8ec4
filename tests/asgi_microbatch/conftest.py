"""Tools for the ASGI adapter tests: a batch function the test holds, a Starlette app over it, and
bounded waits for conditions (never fixed sleeps).

:class:`Gate` records every batch and blocks until the test releases it. A test holds the worker in
the gate with one request, queues exactly the requests it wants behind it (waiting until
``stats.queue_depth`` says so), then opens the gate and reads what the batch function got.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import Batcher
from tests._support import wait_until

WAIT = 10.0  # bounds a wait for something that should happen almost at once; no assertion depends on it




class Gate:
    """A batch function (the fake model) that records each batch, then blocks until the test opens it.

    Each text ``t`` gives ``"vec:t"``, so every response shows whether it carries its own result.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()  # set once the first batch is held in the gate
        self._open = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.entered.set()
        if not self._open.wait(WAIT):
            raise AssertionError("the test never opened the gate")
        return [f"vec:{t}" for t in texts]

    def open(self) -> None:
        self._open.set()

    @property
    def items(self) -> list[str]:
        return [t for call in self.calls for t in call]


class Endpoint:
    """``GET /healthz`` (no batcher call), ``GET /embed?text=...`` (async), ``POST /embed`` with
    ``{"text": ...}`` (async) and ``GET /embed-sync?text=...`` (a sync endpoint, run in Starlette's
    threadpool), all over the batcher ``"embed"``.

    ``calls`` counts the requests that reached an endpoint; ``cancelled`` is set once an endpoint
    was cancelled while it waited for its result.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = threading.Event()

    async def get(self, request: Request) -> JSONResponse:
        return await self._embed(request, request.query_params["text"])

    async def post(self, request: Request) -> JSONResponse:
        return await self._embed(request, (await request.json())["text"])

    def get_sync(self, request: Request) -> JSONResponse:
        self.calls += 1
        return JSONResponse({"vector": get_batcher(request, "embed")(request.query_params["text"])})

    async def _embed(self, request: Request, text: str) -> JSONResponse:
        self.calls += 1
        try:
            return JSONResponse({"vector": await request.state.batchers["embed"].acall(text)})
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})  # makes no batcher call

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz),
            Route("/embed", self.get, methods=["GET"]),
            Route("/embed", self.post, methods=["POST"]),
            Route("/embed-sync", self.get_sync),
        ]


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A closed :class:`Gate`, opened at teardown so no worker stays held."""
    g = Gate()
    yield g
    g.open()


@pytest.fixture
def make_batcher(gate: Gate) -> Iterator[Callable[..., Batcher[str, str]]]:
    """``make_batcher(**options)`` makes a Batcher over ``gate`` named "embed"; closed at teardown."""
    made: list[Batcher[str, str]] = []

    def make(**options: Any) -> Batcher[str, str]:
        options.setdefault("name", "embed")
        b: Batcher[str, str] = Batcher(gate, **options)
        made.append(b)
        return b

    yield make
    gate.open()
    for b in made:
        b.close(drain=False)


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def make_app(endpoint: Endpoint) -> Callable[..., Starlette]:
    """``make_app(batcher, middleware_options=None, **starlette_options)``: a Starlette app with
    :class:`Endpoint`'s routes behind ``BatchingMiddleware(batchers={"embed": batcher}, **middleware_options)``."""

    def make(batcher: Batcher[Any, Any], middleware_options: dict[str, Any] | None = None, **options: Any) -> Starlette:
        middleware = [Middleware(BatchingMiddleware, batchers={"embed": batcher}, **(middleware_options or {}))]
        return Starlette(routes=endpoint.routes(), middleware=middleware, **options)

    return make


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], str], None]:
    """:func:`wait_until` (test modules cannot import this conftest)."""
    return wait_until
