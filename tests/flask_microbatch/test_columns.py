"""A column batch function grouped by a parameter, called from Flask views served by werkzeug's threaded
server: concurrent requests batch by language and each gets its own result; the extension applies the
request's deadline header to the calls and answers the batcher's refusals (ItemTooLarge: 413) as JSON."""

from __future__ import annotations

import operator
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

import flask_microbatch
from microbatch import ColumnBatcher

WAIT = 10.0


def test_a_grouped_column_function_serves_concurrent_flask_requests(wsgi_server: Any, until: Any) -> None:
    batches: list[list[tuple[str, str]]] = []
    release = threading.Event()

    def translate(texts: list[str], languages: list[str]) -> list[str]:
        batches.append(list(zip(texts, languages, strict=True)))
        if len(batches) == 1:
            release.wait(WAIT)
        return [f"{languages[0]}:{text}" for text in texts]

    batcher: ColumnBatcher[str, str, str] = ColumnBatcher(
        translate, max_batch_size=8, max_wait_ms=0, group_by=operator.itemgetter("languages"),
        max_batch_tokens=64, size_of=lambda call: len(call["texts"]),
    )
    app = Flask("columns")
    flask_microbatch.Microbatch(app)

    @app.post("/translate")
    def view() -> ResponseReturnValue:
        body = request.get_json()
        return jsonify(text=batcher(texts=body["text"], languages=body["language"]))

    bodies = [{"text": f"t{i}", "language": ("de", "fr")[i % 2]} for i in range(6)]
    try:
        with wsgi_server(app) as url, ThreadPoolExecutor(8) as pool:

            def post(body: dict[str, Any], **headers: str) -> requests.Response:
                return requests.post(f"{url}/translate", json=body, headers=headers, timeout=WAIT)

            first = pool.submit(post, {"text": "first", "language": "en"})
            until(lambda: len(batches) == 1, "the first request's batch is running")
            rest = [pool.submit(post, body) for body in bodies]
            until(lambda: batcher.stats.queue_depth == len(bodies), "every request is queued")
            release.set()
            assert first.result().json() == {"text": "en:first"}
            assert [r.result().json() for r in rest] == [{"text": f"{b['language']}:{b['text']}"} for b in bodies]
            too_long = post({"text": "x" * 65, "language": "de"})
            assert too_long.status_code == 413 and "error" in too_long.json()
            # A nanosecond's limit has passed before the call is admitted: 504, and the model never sees it.
            expired = post({"text": "late", "language": "de"}, **{"X-Request-Timeout": "0.000000001"})
            assert expired.status_code == 504, expired.text
    finally:
        batcher.close()
    assert {len({lang for _, lang in batch}) for batch in batches} == {1}
    assert sorted(map(sorted, batches[1:3])) == [
        sorted((f"t{i}", "de") for i in range(0, 6, 2)), sorted((f"t{i}", "fr") for i in range(1, 6, 2))
    ]
    assert ("late", "de") not in [row for batch in batches for row in batch]
