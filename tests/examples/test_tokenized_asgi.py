"""examples.tokenized_asgi through a real uvicorn server: per-request tokenization, batched forward,
each client's own sentence-transformers embedding, and a JSON 4xx for bad input."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from examples import tokenized_asgi

TEXTS = [
    "hello",
    "a slightly longer sentence about batching requests",
    "the quick brown fox jumps over the lazy dog " * 6,
    "short",
    "padding must never leak into another caller's vector, whatever the company in its batch",
    "x " * 200,
]


def test_concurrent_requests_each_get_their_own_sentence_transformers_embedding(
    uvicorn_server: Callable[..., Any],
) -> None:
    expected = tokenized_asgi._model.encode(TEXTS, show_progress_bar=False)
    with uvicorn_server(tokenized_asgi.create_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        with ThreadPoolExecutor(len(TEXTS) * 2) as pool:
            responses = list(pool.map(lambda text: client.post("/embed", json={"text": text}), TEXTS * 2))
    for response, want in zip(responses, np.concatenate([expected, expected]), strict=True):
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["embedding"])
        assert got.shape == (384,)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"content": b"{not json"}, 400, "the body must be JSON"),
        ({"json": {"texts": ["a"]}}, 422, 'a string field "text"'),
        ({"json": {"text": 12}}, 422, 'a string field "text"'),
        ({"json": ["text"]}, 422, 'a string field "text"'),
        ({"json": {"text": "word " * 300}}, 413, "longer than 256 word pieces"),
    ],
)
def test_bad_input_gets_a_json_4xx_and_the_server_keeps_serving(
    uvicorn_server: Callable[..., Any], request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    with uvicorn_server(tokenized_asgi.create_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/embed", **request_kwargs)
        assert response.status_code == status
        assert message in response.json()["error"]
        assert client.post("/embed", json={"text": "still serving"}).status_code == 200
