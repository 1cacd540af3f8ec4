"""BatchingMiddleware through Starlette's own TestClient: lifespan drain, lookups, websockets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import BatcherClosed
from microbatch.web import ErrorResponse, error_response

WAIT = 10.0


def test_shutdown_drains_work_still_queued(make_batcher: Any, make_app: Any, gate: Any, wait_until: Any) -> None:
    batcher = make_batcher(max_wait_ms=0)
    client = TestClient(make_app(batcher))
    client.__enter__()
    with ThreadPoolExecutor(3) as pool:
        # Calls made outside any request (a background job): only the drain can save them.
        held = pool.submit(batcher, "held")
        assert gate.entered.wait(WAIT)
        queued = pool.submit(batcher, "queued")
        wait_until(lambda: batcher.stats.queue_depth == 1, "the second call is queued")
        shutdown = pool.submit(client.__exit__, None, None, None)
        wait_until(lambda: batcher.closed, "shutdown has closed the batcher")
        with pytest.raises(BatcherClosed):
            batcher("too late")
        assert not shutdown.done(), "shutdown finished while work was still queued"
        gate.open()
        shutdown.result(WAIT)
        assert (held.result(), queued.result()) == ("vec:held", "vec:queued")
    assert gate.calls == [["held"], ["queued"]]


def test_get_batcher_errors_reach_the_endpoint(make_batcher: Any) -> None:
    async def unknown(request: Request) -> JSONResponse:
        return JSONResponse({"vector": await get_batcher(request, "embedder").acall("x")})

    middleware = [Middleware(BatchingMiddleware, batchers={"embed": make_batcher(), "rerank": make_batcher()})]
    with TestClient(Starlette(routes=[Route("/", unknown)], middleware=middleware)) as client:
        expected = r"no batcher named 'embedder'; BatchingMiddleware has: 'embed', 'rerank'"
        with pytest.raises(LookupError, match=expected):
            client.get("/")
    with TestClient(Starlette(routes=[Route("/", unknown)])) as client:
        with pytest.raises(RuntimeError, match=r"no batchers on this request: wrap the app in BatchingMiddleware"):
            client.get("/")


@pytest.mark.parametrize("raise_server_exceptions", [True, False])
def test_other_exceptions_pass_through(make_batcher: Any, raise_server_exceptions: bool) -> None:
    async def broken(request: Request) -> JSONResponse:
        raise ValueError("a bug in the endpoint")

    middleware = [Middleware(BatchingMiddleware, batchers={"embed": make_batcher()})]
    app = Starlette(routes=[Route("/", broken)], middleware=middleware)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        if raise_server_exceptions:
            with pytest.raises(ValueError, match="a bug in the endpoint"):
                client.get("/")
        else:  # Starlette's own error handling, outside the middleware, makes it a 500
            assert client.get("/").status_code == 500


def test_a_websocket_endpoint_uses_the_batchers(make_batcher: Any, gate: Any) -> None:
    gate.open()
    batcher = make_batcher()

    async def embed(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(await get_batcher(websocket, "embed").acall(text))

    app = Starlette(
        routes=[WebSocketRoute("/ws", embed)],
        middleware=[Middleware(BatchingMiddleware, batchers={"embed": batcher})],
    )
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        for text in ["a", "b"]:
            ws.send_text(text)
            assert ws.receive_text() == f"vec:{text}"
    assert gate.items == ["a", "b"]


# Ownership: who starts the batchers and drains them at shutdown.


def test_a_module_level_app_that_does_not_own_its_batcher_survives_one_test_client_per_test(
    make_batcher: Any, make_app: Any, gate: Any
) -> None:
    gate.open()
    batcher = make_batcher()
    app = make_app(batcher, {"owns_batchers": False})  # as a module-level app imported by every test
    for test in ("first test", "second test", "third test"):
        with TestClient(app) as client:
            assert client.get("/embed", params={"text": test}).json() == {"vector": f"vec:{test}"}
        assert not batcher.closed, "a lifespan that does not own the batcher leaves it open"
    assert batcher.stats.completed == 3


def test_a_drained_batcher_reused_by_its_owner_fails_startup_saying_what_to_do(
    make_batcher: Any, make_app: Any
) -> None:
    app = make_app(make_batcher())  # owns_batchers defaults to True
    with TestClient(app):
        pass
    with pytest.raises(BatcherClosed) as failure, TestClient(app):
        pass
    message = str(failure.value)
    assert "cannot start batcher 'embed': it is closed" in message
    assert "Build the batchers in an app factory" in message and "owns_batchers=False" in message


def test_two_running_apps_cannot_both_own_one_batcher(make_batcher: Any, make_app: Any, gate: Any) -> None:
    gate.open()
    batcher = make_batcher()
    with TestClient(make_app(batcher)) as owner:
        with (
            pytest.raises(RuntimeError, match="already owned by a running BatchingMiddleware of another app"),
            TestClient(make_app(batcher)),
        ):
            pass
        with TestClient(make_app(batcher, {"owns_batchers": False})) as sharer:
            assert sharer.get("/embed", params={"text": "shared"}).json() == {"vector": "vec:shared"}
        assert not batcher.closed, "the sharer's shutdown left the owner's batcher open"
        assert owner.get("/embed", params={"text": "owner"}).json() == {"vector": "vec:owner"}
    assert batcher.closed, "the owner drained it"


def test_a_mounted_sub_app_shares_the_parents_batcher_without_closing_it(
    make_batcher: Any, endpoint: Any, gate: Any
) -> None:
    gate.open()
    batcher = make_batcher()
    sub = Starlette(
        routes=endpoint.routes(),
        middleware=[Middleware(BatchingMiddleware, batchers={"embed": batcher}, owns_batchers=False)],
    )
    parent = Starlette(
        routes=[Mount("/sub", sub), *endpoint.routes()],
        middleware=[Middleware(BatchingMiddleware, batchers={"embed": batcher})],
    )
    with TestClient(parent) as client:
        assert client.get("/sub/embed", params={"text": "sub"}).json() == {"vector": "vec:sub"}
        assert client.get("/embed", params={"text": "parent"}).json() == {"vector": "vec:parent"}
    assert batcher.closed, "the parent owned it and drained it once"
    with TestClient(sub) as client:  # the sub-app alone, as its own tests use it: its lifespan does not fail
        assert client.get("/healthz").json() == {"status": "ok"}


# Error responses: the client sees a safe message; the hook can reshape it.


def test_an_error_handler_can_answer_fastapi_style(make_batcher: Any, make_app: Any) -> None:
    batcher = make_batcher()
    batcher.close()
    seen: list[tuple[str, str]] = []

    def detail(scope: Any, exc: Exception, response: ErrorResponse) -> JSONResponse:
        seen.append((scope["path"], response.detail))
        return JSONResponse({"detail": response.error}, response.status, headers=response.headers)

    with TestClient(make_app(batcher, {"owns_batchers": False, "error_handler": detail})) as client:
        answer = client.get("/embed", params={"text": "x"})
    assert (answer.status_code, answer.json()) == (503, {"detail": error_response(BatcherClosed()).error})  # type: ignore[union-attr]
    assert seen == [("/embed", "batcher 'embed' is closed and accepts no calls")]


def test_an_error_handler_may_return_an_error_response(make_batcher: Any, make_app: Any) -> None:
    batcher = make_batcher()
    batcher.close()

    def retry_elsewhere(scope: Any, exc: Exception, response: ErrorResponse) -> ErrorResponse:
        return ErrorResponse(response.status, "try the other region", {"Retry-After": "5"})

    with TestClient(make_app(batcher, {"owns_batchers": False, "error_handler": retry_elsewhere})) as client:
        answer = client.get("/embed", params={"text": "x"})
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "5")
    assert answer.json() == {"error": "try the other region"}
