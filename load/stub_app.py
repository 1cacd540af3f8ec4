"""A stand-in for the embedding service with no model: the load generator's own cost, measured alone.

``load/compare.py`` points Locust at it at the rate a real step reached, and measures the offline
ceiling meanwhile: the ceiling the machine has left beside the load generator (and an HTTP server
that does nothing), which no batcher can beat. It answers ``POST /embed`` with the same shapes as
the service (one fixed unit-length vector per text, so every Locust check passes) and
``GET /healthz`` and ``GET /stats`` like it. Plain ASGI: ``uvicorn stub_app:app``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

DIMENSIONS = 384
_VECTOR = [1.0 / math.sqrt(DIMENSIONS)] * DIMENSIONS
_HEALTH = orjson.dumps({"status": "ok", "mode": "stub", "model": None})
_STATS = orjson.dumps({"mode": "stub", "batchers": {}})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/embed":
        request = orjson.loads(body)
        payload = (
            orjson.dumps({"embedding": _VECTOR}) if "text" in request
            else orjson.dumps({"embeddings": [_VECTOR] * len(request["texts"])})
        )
    elif scope["path"] == "/stats":
        payload = _STATS
    else:
        payload = _HEALTH
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The same stand-in as plain WSGI, for the threaded servers: ``gunicorn -k gthread stub_app:wsgi_app``."""
    path = environ.get("PATH_INFO", "")
    if path == "/embed":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = orjson.loads(environ["wsgi.input"].read(length))
        payload = (
            orjson.dumps({"embedding": _VECTOR}) if "text" in request
            else orjson.dumps({"embeddings": [_VECTOR] * len(request["texts"])})
        )
    elif path == "/stats":
        payload = _STATS
    else:
        payload = _HEALTH
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
