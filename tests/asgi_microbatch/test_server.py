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

from asgi_microbatch import BatchingMiddleware, Disconnects
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
    assert "BatcherClosed: BatchingMiddleware cannot start batcher 'embed': it is closed" in caplog.text


def test_overload_is_a_503_with_retry_after_and_a_message_that_keeps_the_settings_for_the_log(
    uvicorn_server: Any,
    make_batcher: Any,
    make_app: Any,
    gate: Any,
    wait_until: Any,
    pool: ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = make_batcher(max_batch_size=1, max_queue_size=1, max_wait_ms=0)
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        second = pool.submit(get, url, "second")
        wait_until(lambda: batcher.stats.queue_depth == 1, "the second request's item is queued")
        with caplog.at_level(logging.INFO, logger="microbatch.web"):
            refused = get(url, "refused")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert refused.json() == {"error": "the server is overloaded: retry after the number of seconds in Retry-After"}
        assert "max_queue_size=1" in caplog.text, "the detail is logged, not sent"
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
        assert late.json() == {"error": "the request's time limit passed before its result was ready"}
        gate.open()
        assert first.result().status_code == 200
        assert get(url, "in-time", path, **{"X-Request-Timeout": "30"}).json() == {"vector": "vec:in-time"}
    assert "late" not in gate.items
    assert batcher.stats.expired == 1


def test_a_malformed_request_timeout_fails_only_routes_that_call_a_batcher_with_a_400(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, endpoint: Any
) -> None:
    batcher = make_batcher()
    with uvicorn_server(make_app(batcher)) as url:
        for value in ["soon", "", "-1", "0", "nan", "inf", "1e999", "5 min"]:
            assert get(url, "x", "/healthz", **{"X-Request-Timeout": value}).json() == {"status": "ok"}, value
            response = get(url, "x", **{"X-Request-Timeout": value})
            assert response.status_code == 400, value
            assert response.json() == {
                "error": f"X-Request-Timeout must be a time > 0 in seconds, like 2.5, 5s or 5000ms, got {value!r}: "
                "fix or drop the header"
            }
    assert batcher.stats.submitted == 0, "nothing reached the queue"


def test_a_request_timeout_in_seconds_or_milliseconds_is_a_deadline(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, pool: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(max_wait_ms=0)
    with uvicorn_server(make_app(batcher)) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        assert get(url, "late-ms", **{"X-Request-Timeout": "200ms"}).status_code == 504
        assert get(url, "late-s", **{"X-Request-Timeout": "0.2s"}).status_code == 504
        gate.open()
        assert first.result().status_code == 200
        for value in ["5s", "5000ms", "5"]:
            assert get(url, value, **{"X-Request-Timeout": value}).json() == {"vector": f"vec:{value}"}
    assert batcher.stats.expired == 2


@pytest.mark.parametrize("header", ["X-Deadline", None])
def test_the_timeout_header_can_be_renamed_or_turned_off(
    uvicorn_server: Any, make_batcher: Any, make_app: Any, gate: Any, pool: ThreadPoolExecutor, header: str | None
) -> None:
    batcher = make_batcher(max_wait_ms=0)
    with uvicorn_server(make_app(batcher, {"timeout_header": header})) as url:
        first = pool.submit(get, url, "first")
        assert gate.entered.wait(WAIT)
        if header is not None:
            assert get(url, "late", **{header: "0.2"}).status_code == 504
        ignored = pool.submit(get, url, "ignored", **{"X-Request-Timeout": "soon"})
        gate.open()
        assert (first.result().status_code, ignored.result().json()) == (200, {"vector": "vec:ignored"})


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


def test_a_client_that_hangs_up_mid_body_ends_quietly_and_is_counted(
    uvicorn_server: Any, make_batcher: Any, endpoint: Any, wait_until: Any, caplog: pytest.LogCaptureFixture
) -> None:
    batcher = make_batcher()
    # Wrapped directly, not through Starlette's Middleware list, to keep a handle on the middleware.
    app = BatchingMiddleware(Starlette(routes=endpoint.routes()), batchers={"embed": batcher})
    uvicorn_errors = logging.getLogger("uvicorn.error")
    with uvicorn_server(app) as url:
        # Added once uvicorn has configured its logging (which replaces the handlers and stops propagation).
        uvicorn_errors.addHandler(caplog.handler)
        try:
            address = urlsplit(url)
            for i in range(3):
                client = socket.create_connection((address.hostname, address.port))
                head = (
                    b"POST /embed HTTP/1.1\r\nHost: test\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                )
                client.sendall(head + b'{"text": ')  # 9 of the 100 bytes promised
                client.close()
                wait_until(lambda n=i + 1: app.statistics().while_sending_body == n, "the hang-up is counted")
            assert get(url, "x", "/healthz").json() == {"status": "ok"}, "the server keeps serving"
        finally:
            uvicorn_errors.removeHandler(caplog.handler)
    assert app.statistics() == Disconnects(while_sending_body=3, while_waiting=0)
    assert "Exception in ASGI application" not in caplog.text and "ClientDisconnect" not in caplog.text
    assert batcher.stats.submitted == 0
