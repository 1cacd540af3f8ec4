"""The embedding service on Starlette, batched through asgi_microbatch.

    uvicorn examples.starlette_app:app                            # batched
    MICROBATCH_MODE=unbatched uvicorn examples.starlette_app:app  # every request runs the model itself
    MICROBATCH_REMOTE=redis://127.0.0.1:6379/0 uvicorn --workers 4 examples.starlette_app:app  # model hosts

Batched, each request awaits ``acall`` (one text) or ``amap`` (a list) on the shared batcher, whose
worker thread runs the model; the event loop never blocks. Unbatched, each request runs the model
in Starlette's thread pool (``run_in_threadpool``, up to 40 at once, no lock): what a plain app does.
With ``MICROBATCH_REMOTE`` set, the batcher is a :class:`~microbatch.remote.RemoteBatcher` calling the
model hosts serving ``embed`` at that Redis URL, and this process never loads the model.
The API and its limits are described in :mod:`examples._api`.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import Batcher, SupportsBatching

from . import _api
from ._embedder import embed_texts, load_model, setup_worker_thread

__all__ = ["app", "create_app"]


def create_app(mode: str | None = None, remote: str | None = None) -> Starlette:
    """A new app with its own batcher; ``mode`` is ``"batched"`` or ``"unbatched"`` (default: ``MICROBATCH_MODE``),
    ``remote`` the Redis URL of the model hosts (default: ``MICROBATCH_REMOTE``; unset: the model runs here)."""
    mode = _api.resolve_mode(mode)
    remote = _api.resolve_remote(mode, remote)
    batchers: dict[str, SupportsBatching[str, list[float]]] = {}
    if remote is not None:
        from microbatch.remote import RemoteBatcher

        batchers[_api.BATCHER_NAME] = RemoteBatcher(_api.BATCHER_NAME, url=remote, max_queue_size=_api.MAX_QUEUE_SIZE)
    else:
        load_model()
    if mode == "batched" and remote is None:
        batchers[_api.BATCHER_NAME] = Batcher(
            embed_texts, max_batch_size=_api.MAX_BATCH_SIZE, max_queue_size=_api.MAX_QUEUE_SIZE, name=_api.BATCHER_NAME,
            max_queue_delay_ms=_api.max_queue_delay_ms(), on_worker_start=setup_worker_thread,
            coalesce=_api.COALESCE,
        )
    metrics = _api.Metrics(lambda: batchers)

    async def embed(request: Request) -> Response:
        try:
            parsed = _api.parse_embed_request(await read_body(request))
        except _api.BadRequest as exc:
            return JSONResponse(exc.body, exc.status)
        if mode == "unbatched":
            vectors = await run_in_threadpool(embed_texts, parsed.texts)
        elif parsed.single:
            vectors = [await get_batcher(request, _api.BATCHER_NAME).acall(parsed.texts[0])]
        else:
            vectors = await get_batcher(request, _api.BATCHER_NAME).amap(parsed.texts)
        return Response(_api.json_bytes(parsed.response(vectors)), media_type=_api.JSON_CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return JSONResponse(_api.health_body(mode))

    async def stats(request: Request) -> Response:
        return JSONResponse(_api.stats_body(mode, batchers))

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=_api.METRICS_CONTENT_TYPE)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own 404/405 as JSON, like every other client error of the service.
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    routes = [
        Route("/embed", embed, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/stats", stats),
        Route("/metrics", metrics_endpoint),
    ]
    middleware = [Middleware(BatchingMiddleware, batchers=batchers)] if batchers else []
    handlers: Any = {HTTPException: http_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


async def read_body(request: Request) -> bytes:
    """The body, refused (413) on its declared length or once the bytes read pass the limit, never read further."""
    _api.check_declared_length(request.headers.get("content-length"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _api.MAX_BODY_BYTES:
            raise _api.too_large()
        chunks.append(chunk)
    return b"".join(chunks)


app = create_app()
