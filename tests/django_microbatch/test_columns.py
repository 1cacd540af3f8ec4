"""A column batch function grouped by a parameter, called from a Django view served by Django's WSGI handler
on a real threaded server: concurrent requests batch by language and each gets its own result; the
middleware answers the batcher's refusals (ItemTooLarge: 413) as JSON."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import djmb_columns
import requests
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

WAIT = 10.0


def test_a_grouped_column_function_serves_concurrent_django_requests(wsgi_server: Any, wait_until: Any) -> None:
    model, batcher = djmb_columns.TRANSLATOR, djmb_columns.translate
    bodies = [{"text": f"t{i}", "language": ("de", "fr")[i % 2]} for i in range(6)]
    with override_settings(ROOT_URLCONF="djmb_columns"), wsgi_server(WSGIHandler()) as url:
        with ThreadPoolExecutor(8) as pool:

            def post(body: dict[str, Any]) -> requests.Response:
                return requests.post(f"{url}/translate/", json=body, timeout=WAIT)

            first = pool.submit(post, {"text": "first", "language": "en"})
            wait_until(lambda: len(model.batches) == 1, "the first request's batch is running")
            rest = [pool.submit(post, body) for body in bodies]
            wait_until(lambda: batcher.stats.queue_depth == len(bodies), "every request is queued")
            model.release.set()
            assert first.result().json() == {"text": "en:first"}
            assert [r.result().json() for r in rest] == [{"text": f"{b['language']}:{b['text']}"} for b in bodies]
            too_long = post({"text": "x" * 65, "language": "de"})
            assert too_long.status_code == 413 and "error" in too_long.json()
    assert sorted(map(sorted, model.batches[1:3])) == [
        sorted((f"t{i}", "de") for i in range(0, 6, 2)), sorted((f"t{i}", "fr") for i in range(1, 6, 2))
    ]
