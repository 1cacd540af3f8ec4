"""Through real servers on loopback: werkzeug's threaded WSGI server and uvicorn (ASGI), with real HTTP clients."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest
import requests
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

WAIT = 10.0


@pytest.fixture
def serve(
    wsgi_server: Callable[..., AbstractContextManager[str]], uvicorn_server: Callable[..., AbstractContextManager[str]]
) -> Callable[[str], AbstractContextManager[str]]:
    """``with serve("wsgi" | "asgi") as url:`` serves the test project with Django's own handler."""

    def start(kind: str) -> AbstractContextManager[str]:
        if kind == "wsgi":
            return wsgi_server(WSGIHandler())
        # Django's ASGIHandler refuses lifespan scopes.
        return uvicorn_server(ASGIHandler(), lifespan="off")

    return start


def _post(url: str, text: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(url, json={"text": text}, headers=headers, timeout=WAIT)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("wsgi", "/sync/"),  # a thread per request: sync views batch
        ("wsgi", "/fn/embed/"),
        ("asgi", "/async/"),  # no thread per request: the recommended form under ASGI
        ("asgi", "/afn/embed/"),
        ("asgi", "/sync/"),  # Django gives each ASGI request its own thread for sync code, so these batch too
    ],
)
def test_concurrent_requests_batch_and_each_gets_its_own_result(
    kind: str,
    path: str,
    serve: Callable[[str], AbstractContextManager[str]],
    model: Any,
    queued: Callable[[str, int], None],
    pool: ThreadPoolExecutor,
) -> None:
    with serve(kind) as url:
        model.hold()
        first = pool.submit(_post, url + path, "t0")
        model.wait_blocked()
        rest = [pool.submit(_post, url + path, f"t{i}") for i in range(1, 8)]
        queued("embed", 7)
        model.release()
        responses = [future.result(WAIT) for future in [first, *rest]]
    assert [(r.status_code, r.json()) for r in responses] == [(200, {"vector": f"vec(t{i})"}) for i in range(8)]
    assert model.sizes == [1, 7]


@pytest.mark.parametrize(
    ("kind", "path"), [("wsgi", "/sync/"), ("wsgi", "/fn/embed/"), ("asgi", "/async/"), ("asgi", "/afn/embed/")]
)
def test_deadline_header_is_504_and_bad_header_400(
    kind: str,
    path: str,
    serve: Callable[[str], AbstractContextManager[str]],
    model: Any,
    pool: ThreadPoolExecutor,
) -> None:
    with serve(kind) as url:
        model.hold()
        running = pool.submit(_post, url + path, "a")
        model.wait_blocked()
        late = _post(url + path, "late", {"X-Request-Timeout": "0.05"})
        bad = _post(url + path, "bad", {"X-Request-Timeout": "soon"})
        model.release()
        assert (late.status_code, late.headers["Content-Type"]) == (504, "application/json")
        assert "time limit" in late.json()["error"]
        assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]
        assert running.result(WAIT).json() == {"vector": "vec(a)"}
        assert _post(url + path, "after").json() == {"vector": "vec(after)"}  # still serving
    assert model.sizes == [1, 1]


@pytest.mark.parametrize(
    ("kind", "path"), [("wsgi", "/sync/tiny/"), ("wsgi", "/fn/tiny/"), ("asgi", "/async/tiny/"), ("asgi", "/afn/tiny/")]
)
def test_overload_is_503_with_retry_after(
    kind: str,
    path: str,
    serve: Callable[[str], AbstractContextManager[str]],
    model: Any,
    queued: Callable[[str, int], None],
    pool: ThreadPoolExecutor,
) -> None:
    tiny = {"fn": "djmb_app.embed_texts", "max_batch_size": 1, "max_queue_size": 1, "max_wait_ms": 0}
    with override_settings(MICROBATCH={"tiny": tiny}), serve(kind) as url:
        model.hold()
        running = pool.submit(_post, url + path, "a")
        model.wait_blocked()
        waiting = pool.submit(_post, url + path, "b")
        queued("tiny", 1)
        refused = _post(url + path, "c")
        model.release()
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "overloaded" in refused.json()["error"] and "max_queue_size" not in refused.json()["error"]
        assert running.result(WAIT).json() == {"vector": "vec(a)"}
        assert waiting.result(WAIT).json() == {"vector": "vec(b)"}
