"""BatchingMiddleware through Starlette's own TestClient: lifespan drain, lookups, websockets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import BatcherClosed

WAIT = 10.0


def test_shutdown_drains_work_still_queued(make_batcher: Any, make_app: Any, gate: Any, wait_until: Any) -> None:
    batcher = make_batcher(max_wait_ms=0)
    client = TestClient(make_app(batcher))
    client.__enter__()
    with ThreadPoolExecutor(3) as pool:
        # Calls made outside any request (a background job): only the drain can save them.
        held = pool.submit(batcher, "held")
        assert gate.entered.wait(WAIT)
        queued = pool.submit(batcher, "queued")
        wait_until(lambda: batcher.stats.queue_depth == 1, "the second call is queued")
        shutdown = pool.submit(client.__exit__, None, None, None)
        wait_until(lambda: batcher.closed, "shutdown has closed the batcher")
        with pytest.raises(BatcherClosed):
            batcher("too late")
        assert not shutdown.done(), "shutdown finished while work was still queued"
        gate.open()
        shutdown.result(WAIT)
        assert (held.result(), queued.result()) == ("vec:held", "vec:queued")
    assert gate.calls == [["held"], ["queued"]]


def test_get_batcher_errors_reach_the_endpoint(make_batcher: Any) -> None:
    async def unknown(request: Request) -> JSONResponse:
        return JSONResponse({"vector": await get_batcher(request, "embedder").acall("x")})

    middleware = [Middleware(BatchingMiddleware, batchers={"embed": make_batcher(), "rerank": make_batcher()})]
    with TestClient(Starlette(routes=[Route("/", unknown)], middleware=middleware)) as client:
        with pytest.raises(LookupError, match=r"no batcher named 'embedder'; BatchingMiddleware has: 'embed', 'rerank'"):
            client.get("/")
    with TestClient(Starlette(routes=[Route("/", unknown)])) as client:
        with pytest.raises(RuntimeError, match=r"no batchers on this request: wrap the app in BatchingMiddleware"):
            client.get("/")


@pytest.mark.parametrize("raise_server_exceptions", [True, False])
def test_other_exceptions_pass_through(make_batcher: Any, raise_server_exceptions: bool) -> None:
    async def broken(request: Request) -> JSONResponse:
        raise ValueError("a bug in the endpoint")

    middleware = [Middleware(BatchingMiddleware, batchers={"embed": make_batcher()})]
    app = Starlette(routes=[Route("/", broken)], middleware=middleware)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        if raise_server_exceptions:
            with pytest.raises(ValueError, match="a bug in the endpoint"):
                client.get("/")
        else:  # Starlette's own error handling, outside the middleware, makes it a 500
            assert client.get("/").status_code == 500


def test_a_websocket_endpoint_uses_the_batchers(make_batcher: Any, gate: Any) -> None:
    gate.open()
    batcher = make_batcher()

    async def embed(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(await get_batcher(websocket, "embed").acall(text))

    app = Starlette(
        routes=[WebSocketRoute("/ws", embed)],
        middleware=[Middleware(BatchingMiddleware, batchers={"embed": batcher})],
    )
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        for text in ["a", "b"]:
            ws.send_text(text)
            assert ws.receive_text() == f"vec:{text}"
    assert gate.items == ["a", "b"]
