"""The example apps switch to model hosts with one setting (``MICROBATCH_REMOTE``), on the real model.

The host is the command the README documents: ``microbatch serve examples._embedder:embed_texts
--name embed --max-batch-size 32``; its vectors are the model's own (384 floats, unit length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import RedisServer


def test_the_flask_and_starlette_examples_embed_through_a_model_host(
    start_host: Callable[..., Any], redis_server: RedisServer, uvicorn_server: Callable[..., Any],
    wsgi_server: Callable[..., Any],
) -> None:
    from examples import flask_app, starlette_app

    start_host("examples._embedder:embed_texts", "--max-batch-size", "32", name="embed")
    flask = flask_app.create_app("batched", remote=redis_server.url)
    with uvicorn_server(starlette_app.create_app("batched", remote=redis_server.url)) as asgi_url, \
            wsgi_server(flask) as wsgi_url:
        for url in (asgi_url, wsgi_url):
            one = httpx.post(f"{url}/embed", json={"text": "a cat sits on the mat"}, timeout=60)
            many = httpx.post(f"{url}/embed", json={"texts": ["a cat sits on the mat", "hello"]}, timeout=60)
            assert one.status_code == 200 and many.status_code == 200, (one.text, many.text)
            vector = one.json()["embedding"]
            assert len(vector) == 384 and math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-4)
            first, second = many.json()["embeddings"]
            assert max(abs(a - b) for a, b in zip(first, vector, strict=True)) < 1e-4 and first != second
            stats = httpx.get(f"{url}/stats", timeout=10).json()["batchers"]["embed"]
            assert stats["client"]["completed"] >= 3 and len(stats["hosts"]) == 1
    flask_app.mb.close(flask)
