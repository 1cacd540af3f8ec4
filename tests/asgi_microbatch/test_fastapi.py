"""BatchingMiddleware added to a FastAPI app the FastAPI way, served by a real uvicorn on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import Batcher

WAIT = 10.0


def fastapi_app(batcher: Batcher[str, str]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BatchingMiddleware, batchers={"embed": batcher})

    @app.get("/embed")
    async def embed(text: str, request: Request) -> dict[str, str]:
        return {"vector": await get_batcher(request, "embed").acall(text)}

    @app.get("/embed-sync")
    def embed_sync(text: str, request: Request) -> dict[str, str]:  # runs in the threadpool
        return {"vector": request.state.batchers["embed"](text)}

    return app


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as p:
        yield p


def get(url: str, path: str, text: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", params={"text": text}, headers=headers, timeout=WAIT)


@pytest.mark.parametrize("path", ["/embed", "/embed-sync"])
def test_fastapi_requests_batch_together(
    uvicorn_server: Any, make_batcher: Any, gate: Any, wait_until: Any, pool: ThreadPoolExecutor, path: str
) -> None:
    batcher = make_batcher(max_batch_size=8, max_wait_ms=0)
    texts = [f"text-{i}" for i in range(5)]
    with uvicorn_server(fastapi_app(batcher)) as url:
        first = pool.submit(get, url, path, "first")
        assert gate.entered.wait(WAIT)
        rest = [pool.submit(get, url, path, t) for t in texts]
        wait_until(lambda: batcher.stats.queue_depth == len(texts), "every request's item is queued")
        gate.open()
        assert first.result().json() == {"vector": "vec:first"}
        assert [f.result().json() for f in rest] == [{"vector": f"vec:{t}"} for t in texts]
    assert sorted(gate.calls[1]) == texts
    assert batcher.closed, "the lifespan drained the batcher at shutdown"


def test_fastapi_overload_and_deadline_responses(
    uvicorn_server: Any, make_batcher: Any, gate: Any, wait_until: Any, pool: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(max_batch_size=1, max_queue_size=1, max_wait_ms=0)
    with uvicorn_server(fastapi_app(batcher)) as url:
        first = pool.submit(get, url, "/embed", "first")
        assert gate.entered.wait(WAIT)
        late = get(url, "/embed-sync", "late", **{"X-Request-Timeout": "0.2"})
        assert late.status_code == 504 and "time limit" in late.json()["error"]
        queued = pool.submit(get, url, "/embed", "queued")
        wait_until(lambda: batcher.stats.queue_depth == 1, "the queue is full")
        refused = get(url, "/embed", "refused")
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert get(url, "/embed", "x", **{"X-Request-Timeout": "soon"}).status_code == 400
        gate.open()
        assert [first.result().status_code, queued.result().status_code] == [200, 200]
    assert gate.items == ["first", "queued"]
