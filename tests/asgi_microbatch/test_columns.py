"""A column batch function grouped by a parameter, served by BatchingMiddleware in a Starlette app on a real
uvicorn: concurrent requests in several languages batch by language, each response carries its own result,
a wrong call fails only its request, and the middleware drains the batcher at shutdown."""

from __future__ import annotations

import operator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import ColumnBatcher
from tests._support import Translator

WAIT = 10.0



async def translate(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"text": await get_batcher(request, "translate").acall(**body)})


def test_a_grouped_column_function_serves_concurrent_requests_over_uvicorn(
    uvicorn_server: Any, wait_until: Any
) -> None:
    model = Translator()

    def run(texts: list[str], languages: list[str]) -> list[str]:
        return model(texts, languages)

    batcher: ColumnBatcher[str, str, str] = ColumnBatcher(
        run, name="translate", max_batch_size=8, max_wait_ms=0, group_by=operator.itemgetter("languages")
    )
    app = BatchingMiddleware(
        Starlette(routes=[Route("/translate", translate, methods=["POST"])]), batchers={"translate": batcher}
    )
    bodies = [{"texts": f"t{i}", "languages": ("de", "fr")[i % 2]} for i in range(6)]
    with uvicorn_server(app) as url, ThreadPoolExecutor(8) as pool:

        def post(body: dict[str, Any]) -> httpx.Response:
            return httpx.post(f"{url}/translate", json=body, timeout=WAIT)

        first = pool.submit(post, {"texts": "first", "languages": "en"})
        wait_until(lambda: len(model.batches) == 1, "the first request's batch is running")
        rest = [pool.submit(post, body) for body in bodies]
        wait_until(lambda: batcher.stats.queue_depth == len(bodies), "every request is queued")
        model.release.set()
        assert first.result().json() == {"text": "en:first"}
        assert [r.result().json() for r in rest] == [{"text": f"{b['languages']}:{b['texts']}"} for b in bodies]
        wrong = post({"texts": "no language"})  # TypeError in the endpoint: a 500 for this request only
        assert wrong.status_code == 500
        assert post({"texts": "after", "languages": "de"}).json() == {"text": "de:after"}
    assert sorted(map(sorted, model.batches[1:3])) == [
        sorted((f"t{i}", "de") for i in range(0, 6, 2)), sorted((f"t{i}", "fr") for i in range(1, 6, 2))
    ]
    assert batcher.closed  # the middleware owned it and drained it at shutdown
