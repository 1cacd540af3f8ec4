"""The ASGI middleware serves through a RemoteBatcher exactly as through a Batcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch.remote import RemoteBatcher

from .conftest import RedisServer


async def echo(request: Request) -> JSONResponse:
    text = (await request.json())["text"]
    return JSONResponse({"result": await get_batcher(request, "embed").acall(text)})


def test_the_asgi_middleware_takes_a_remote_batcher(
    start_host: Callable[..., Any], redis_server: RedisServer, uvicorn_server: Callable[..., Any]
) -> None:
    host = start_host("echo")
    remote: RemoteBatcher[str, Any] = RemoteBatcher("t", url=redis_server.url, timeout=5)
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])],
                    middleware=[Middleware(BatchingMiddleware, batchers={"embed": remote})])
    with uvicorn_server(app) as url:
        ok = httpx.post(f"{url}/echo", json={"text": "hi"}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"result": ["hi", host.pid]}
        redis_server.stop()
        down = httpx.post(f"{url}/echo", json={"text": "hi"}, timeout=10)
        assert down.status_code == 503
        assert "unreachable" in down.json()["error"]
    assert remote.closed  # drained by the lifespan shutdown
