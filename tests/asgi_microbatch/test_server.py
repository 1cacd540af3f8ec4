"""BatchingMiddleware in a Starlette app served by a real uvicorn on loopback, called with httpx."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from microbatch import Batcher

WAIT = 10.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as p:
        yield p


def get(url: str, text: str, path: str = "/embed", **headers: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", params={"text": text}, headers=headers, timeout=WAIT)


def worker_alive(batcher: Batcher[Any, Any]) -> bool:
    return any(t.name == f"microbatch-{batcher.name}" for t in threading.enumerate())


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_result(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, wait_until: Any, pool: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(max_batch_size=8, max_wait_ms=0)
    texts = [f"text-{i}" for i in range(6)]
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        rest = [pool.submit(get, url, t) for t in texts]
        wait_until(lambda: batcher.stats.queue_depth == len(texts), "every request's item is queued")
        gate.open()
        assert first.result().json() == {"vector": "vec:first"}
        assert [f.result().json() for f in rest] == [{"vector": f"vec:{t}"} for t in texts]
    assert gate.calls[0] == ["first"]
    assert sorted(gate.calls[1]) == texts
    assert batcher.stats.batch_sizes == {1: 1, 6: 1}


def test_lifespan_starts_the_batchers_and_drains_them_at_shutdown(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, pool: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(name="lifespan-embed", max_wait_ms=0)
    server = uvicorn_server(make_app(batcher))
    url = server.__enter__()
    try:
        assert worker_alive(batcher), "the worker runs from startup, before any call"
        in_flight = pool.submit(get, url, "in-flight")
        assert gate.entered.wait(WAIT)
    finally:
        stopping = pool.submit(server.__exit__, None, None, None)
    # The server is shutting down while the request waits on the model; it still gets its answer.
    gate.open()
    stopping.result(WAIT)
    assert in_flight.result().json() == {"vector": "vec:in-flight"}
    assert batcher.closed
    assert not worker_alive(batcher)


@pytest.mark.parametrize("lifespan", ["on", "auto"])
def test_an_app_with_its_own_lifespan_runs_it_inside_the_batchers_lifetime(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, lifespan: str
) -> None:
    gate.open()
    batcher = make_batcher(name=f"own-lifespan-{lifespan}")
    events: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> Any:
        events.append(("startup: worker alive", worker_alive(batcher)))
        events.append(("startup: warm-up", await batcher.acall("warm-up")))
        yield
        events.append(("shutdown: batcher closed", batcher.closed))

    with uvicorn_server(make_app(batcher, lifespan=app_lifespan), lifespan=lifespan) as url:
        assert get(url, "x").json() == {"vector": "vec:x"}
    assert events == [
        ("startup: worker alive", True),
        ("startup: warm-up", "vec:warm-up"),
        ("shutdown: batcher closed", True),
    ]


# uvicorn ends its thread with SystemExit when startup fails; that is the point here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batcher_that_cannot_start_fails_the_startup(
    make_batcher: Any, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    batcher = make_batcher()
    batcher.close()
    # The shared fixture waits out its whole start timeout on a failed startup; run uvicorn directly.
    server = uvicorn.Server(uvicorn.Config(make_app(batcher), host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        thread.start()
        thread.join(WAIT)
    assert not thread.is_alive(), "uvicorn kept running after a failed startup"
    assert not server.started
    assert "BatcherClosed: batcher 'embed' is closed" in caplog.text


def test_overload_is_a_503_with_retry_after(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, wait_until: Any, pool: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(max_batch_size=1, max_queue_size=1, max_wait_ms=0)
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        second = pool.submit(get, url, "second")
        wait_until(lambda: batcher.stats.queue_depth == 1, "the second request's item is queued")
        refused = get(url, "refused")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert "max_queue_size=1" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1
        gate.open()
        assert [first.result().status_code, second.result().status_code] == [200, 200]
    assert "refused" not in gate.items
    assert batcher.stats.rejected == 1


@pytest.mark.parametrize("path", ["/embed", "/embed-sync"])
def test_request_timeout_header_is_a_deadline_for_async_and_threadpool_endpoints(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, pool: ThreadPoolExecutor, path: str
) -> None:
    batcher = make_batcher(max_wait_ms=0)
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        # Without the deadline reaching the endpoint this request would wait for the gate, which
        # opens only after it answered.
        late = get(url, "late", path, **{"X-Request-Timeout": "0.2"})
        assert late.status_code == 504
        assert "deadline" in late.json()["error"]
        gate.open()
        assert first.result().status_code == 200
        assert get(url, "in-time", path, **{"X-Request-Timeout": "30"}).json() == {"vector": "vec:in-time"}
    assert "late" not in gate.items
    assert batcher.stats.expired == 1


def test_a_bad_request_timeout_is_a_400_and_the_app_is_not_called(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, endpoint: Any
) -> None:
    with uvicorn_server(make_app(make_batcher())) as url:
        for value in ["soon", "", "-1", "0", "nan", "inf", "1e999"]:
            response = get(url, "x", **{"X-Request-Timeout": value})
            assert response.status_code == 400, value
            assert response.json() == {
                "error": f"X-Request-Timeout must be a number of seconds > 0, got {value!r}"
            }
    assert endpoint.calls == 0


def raw_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.mark.parametrize(
    "request_bytes",
    [raw_request("GET", "/embed?text=gone"), raw_request("POST", "/embed", b'{"text": "gone"}')],
    ids=["GET-without-body", "POST-with-body"],
)
def test_a_client_that_hangs_up_has_its_item_cancelled_before_it_reaches_the_model(
    uvicorn_server: Any,
    make_batcher: Any,
    make_app: Any,
    gate: Any,
    endpoint: Any,
    wait_until: Any,
    pool: ThreadPoolExecutor,
    request_bytes: bytes,
) -> None:
    batcher = make_batcher(max_wait_ms=0)
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        address = urlsplit(url)
        client = socket.create_connection((address.hostname, address.port))
        client.sendall(request_bytes)
        wait_until(lambda: batcher.stats.queue_depth == 1, "the hanging-up client's item is queued")
        client.close()
        assert endpoint.cancelled.wait(WAIT), "the endpoint was not cancelled"
        assert batcher.stats.cancelled == 1
        assert batcher.stats.queue_depth == 0
        gate.open()
        assert first.result().json() == {"vector": "vec:first"}
        assert get(url, "after").json() == {"vector": "vec:after"}, "the server keeps serving"
    assert gate.items == ["first", "after"]
