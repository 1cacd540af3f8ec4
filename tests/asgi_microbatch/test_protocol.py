"""BatchingMiddleware spoken to directly over ASGI on a real event loop, with the server's side scripted.

These pin down the protocol corners a real server rarely shows on demand: a server that sends
``http.disconnect`` only once, the lifespan failure paths, errors after the response started, and
that nothing the middleware starts outlives a request.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request

import asgi_microbatch
from asgi_microbatch import BatchingMiddleware, get_batcher
from microbatch import Batcher, BatcherClosed, DeadlineExceeded, Overloaded, SupportsBatching
from microbatch.web import error_response

WAIT = 10.0
Message = MutableMapping[str, Any]
App = Callable[..., Any]


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(WAIT):
            return await coro

    return asyncio.run(bounded())


def http_scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "http_version": "1.1", "method": method, "path": "/", "headers": headers or []}


class Server:
    """The server's side of one HTTP request: the body, then ``http.disconnect`` once ``hang_up()``
    is called, and after that nothing at all (a strict server that reports a disconnect once)."""

    def __init__(self, body: bytes = b"") -> None:
        self.messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        self.hung_up = asyncio.Event()
        self.disconnects = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        if self.disconnects:
            await asyncio.Event().wait()  # the one disconnect was already given
        await self.hung_up.wait()
        self.disconnects += 1
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def hang_up(self) -> None:
        self.hung_up.set()


def test_public_api_matches_all() -> None:
    assert sorted(asgi_microbatch.__all__) == ["BatchingMiddleware", "Disconnects", "ErrorHandler", "get_batcher"]
    assert all(getattr(asgi_microbatch, name) is not None for name in asgi_microbatch.__all__)
    public = {name for name in vars(asgi_microbatch) if not name.startswith("_")} - {"annotations"}
    assert public == set(asgi_microbatch.__all__)


def test_batchers_must_be_batchers() -> None:
    expected = r"batchers\['embed'\] must be a microbatch.Batcher or microbatch.remote.RemoteBatcher, got function"
    with pytest.raises(TypeError, match=expected):
        BatchingMiddleware(raises_on_lifespan, batchers={"embed": lambda texts: texts})  # type: ignore[dict-item]


def test_get_batcher_names_the_fix_when_something_is_missing(make_batcher: Any) -> None:
    with pytest.raises(RuntimeError, match=r"wrap the app in BatchingMiddleware"):
        get_batcher(http_scope(), "embed")
    scope = {**http_scope(), "state": {"batchers": {"embed": make_batcher(), "rerank": make_batcher(name="rerank")}}}
    with pytest.raises(LookupError, match=r"^no batcher named 'nope'; BatchingMiddleware has: 'embed', 'rerank'$"):
        get_batcher(scope, "nope")
    assert get_batcher(scope, "rerank").name == "rerank"


def test_websocket_and_unknown_scopes_pass_through_untouched(make_batcher: Any) -> None:
    batcher = make_batcher()
    seen: list[tuple[Any, ...]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    server = Server()
    middleware = BatchingMiddleware(app, batchers={"embed": batcher})
    websocket = {"type": "websocket", "headers": [(b"x-request-timeout", b"not a number")]}
    run(middleware(websocket, server.receive, server.send))
    run(middleware({"type": "custom"}, server.receive, server.send))
    assert seen == [
        (websocket, server.receive, server.send),
        ({"type": "custom"}, server.receive, server.send),
    ]
    assert get_batcher(websocket, "embed") is batcher, "a websocket endpoint can still reach the batchers"
    assert server.sent == []


def test_stacked_middlewares_share_all_their_batchers(make_batcher: Any) -> None:
    embed, rerank = make_batcher(), make_batcher(name="rerank")
    found: list[SupportsBatching[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        found.extend([get_batcher(scope, "embed"), get_batcher(scope, "rerank")])

    inner = BatchingMiddleware(app, batchers={"rerank": rerank})
    server = Server()
    run(BatchingMiddleware(inner, batchers={"embed": embed})(http_scope(), server.receive, server.send))
    assert found == [embed, rerank]


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (Overloaded("full", retry_after=2.1), 503, b"3"),
        (Overloaded("full", retry_after=0.01), 503, b"1"),
        (DeadlineExceeded("too late"), 504, None),
        (BatcherClosed("closed"), 503, None),
    ],
)
def test_batcher_errors_become_json_responses(error: Exception, status: int, retry_after: bytes | None) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    server = Server()
    run(BatchingMiddleware(app, batchers={})(http_scope(), server.receive, server.send))
    start, body = server.sent
    assert start["status"] == status
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers.get(b"retry-after") == retry_after
    assert json.loads(body["body"]) == error_response(error).body  # type: ignore[union-attr]


def test_errors_after_the_response_started_and_other_errors_pass_through() -> None:
    async def started_then_overloaded(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise Overloaded("full", retry_after=1.0)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug in the app")

    server = Server()
    with pytest.raises(Overloaded):
        run(BatchingMiddleware(started_then_overloaded, batchers={})(http_scope(), server.receive, server.send))
    assert [m["type"] for m in server.sent] == ["http.response.start"]
    with pytest.raises(ValueError, match="a bug in the app"):
        run(BatchingMiddleware(broken, batchers={})(http_scope(), Server().receive, Server().send))


def test_hang_up_cancels_the_waiting_app_and_the_request_ends_quietly(make_batcher: Any, gate: Any) -> None:
    batcher = make_batcher(max_wait_ms=0)
    outcome: list[str] = []
    queued = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        queued.set()  # no await before acall queues the item: when the test wakes, it is queued
        try:
            await batcher.acall("gone")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main() -> None:
        holder = asyncio.ensure_future(batcher.acall("held"))
        await asyncio.to_thread(gate.entered.wait, WAIT)
        server = Server(b"{}")
        middleware = BatchingMiddleware(app, batchers={})
        request = asyncio.ensure_future(
            middleware(http_scope("POST", [(b"content-length", b"2")]), server.receive, server.send)
        )
        await queued.wait()
        assert batcher.stats.queue_depth == 1
        server.hang_up()
        await request  # returns: a cancellation the middleware caused is not the server's concern
        assert request.cancelling() == 0
        assert server.sent == []
        gate.open()
        assert await holder == "vec:held"
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())
    assert outcome == ["cancelled"]
    assert gate.items == ["held"]
    assert batcher.stats.cancelled == 1


def test_a_cancellation_from_the_server_is_not_swallowed() -> None:
    entered = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    async def main() -> None:
        server = Server()
        request = asyncio.ensure_future(BatchingMiddleware(app, batchers={})(http_scope(), server.receive, server.send))
        await entered.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())


def test_the_apps_own_receives_after_the_body_get_the_disconnect() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        got.append(await request.body())
        # Starlette's check polls receive() in a cancelled scope: that must not stop the watch.
        got.append(await request.is_disconnected())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        server.hang_up()  # after the response started: the app is not cancelled, it hears of it
        got.append(await receive())
        got.append(await request.is_disconnected())
        await send({"type": "http.response.body", "body": b""})

    server = Server(b"x")
    middleware = BatchingMiddleware(app, batchers={})
    run(middleware(http_scope("POST", [(b"content-length", b"1")]), server.receive, server.send))
    assert got == [b"x", False, {"type": "http.disconnect"}, True]


def test_a_request_without_body_gets_its_empty_body_message_and_leaves_no_task() -> None:
    got: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())

    async def main() -> None:
        server = Server()
        await BatchingMiddleware(app, batchers={})(http_scope(), server.receive, server.send)
        assert asyncio.all_tasks() == {asyncio.current_task()}, "the disconnect watch outlived the request"

    run(main())
    assert got == [{"type": "http.request", "body": b"", "more_body": False}]


# ---------------------------------------------------------------------------------------------- lifespan


async def lifespan(
    app: App, at_startup: Callable[[], None] = lambda: None
) -> tuple[list[Message], BaseException | None]:
    """Play the server: startup, then (once startup completed) shutdown. Returns what the app sent and raised."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            at_startup()
            inbox.put_nowait({"type": "lifespan.shutdown"})

    try:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)
    except Exception as exc:
        return sent, exc
    return sent, None


def worker_alive(batcher: Batcher[Any, Any]) -> bool:
    return any(t.name == f"microbatch-{batcher.name}" for t in threading.enumerate())


def kinds(sent: list[Message]) -> list[str]:
    return [m["type"] for m in sent]


def starlette_with(batchers: dict[str, Batcher[Any, Any]], events: list[str], fail: str = "") -> BatchingMiddleware:
    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> Any:
        events.append(f"startup, batchers closed: {[b.closed for b in batchers.values()]}")
        if fail == "startup":
            raise RuntimeError("no model file")
        yield
        events.append(f"shutdown, batchers closed: {[b.closed for b in batchers.values()]}")
        if fail == "shutdown":
            raise RuntimeError("cannot release the model")

    return BatchingMiddleware(Starlette(lifespan=app_lifespan), batchers=batchers)


def test_lifespan_wraps_the_batchers_around_the_apps_own(make_batcher: Any) -> None:
    batcher = make_batcher()
    events: list[str] = []
    sent, raised = run(lifespan(starlette_with({"embed": batcher}, events)))
    assert (kinds(sent), raised) == (["lifespan.startup.complete", "lifespan.shutdown.complete"], None)
    assert events == ["startup, batchers closed: [False]", "shutdown, batchers closed: [True]"]


def test_a_batcher_that_cannot_start_fails_the_startup_before_the_app_starts(make_batcher: Any) -> None:
    healthy, closed = make_batcher(name="healthy"), make_batcher(name="closed")
    events: list[str] = []
    closed.close()
    sent, raised = run(lifespan(starlette_with({"healthy": healthy, "closed": closed}, events)))
    assert kinds(sent) == ["lifespan.startup.failed"]
    assert "BatcherClosed: BatchingMiddleware cannot start batcher 'closed': it is closed" in sent[0]["message"]
    assert isinstance(raised, BatcherClosed)
    assert events == []
    assert healthy.closed, "the batchers already started are closed again"


def test_the_apps_startup_failure_is_reported_and_the_batchers_close(make_batcher: Any) -> None:
    batcher = make_batcher()
    events: list[str] = []
    sent, raised = run(lifespan(starlette_with({"embed": batcher}, events, fail="startup")))
    assert kinds(sent) == ["lifespan.startup.failed"]
    assert "RuntimeError: no model file" in sent[0]["message"]
    assert isinstance(raised, RuntimeError)
    assert batcher.closed


def test_the_apps_shutdown_failure_is_reported(make_batcher: Any) -> None:
    batcher = make_batcher()
    events: list[str] = []
    sent, raised = run(lifespan(starlette_with({"embed": batcher}, events, fail="shutdown")))
    assert kinds(sent) == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert "RuntimeError: cannot release the model" in sent[1]["message"]
    assert isinstance(raised, RuntimeError)
    assert batcher.closed


class CloseFails(Batcher[Any, Any]):
    """A batcher whose shutdown goes wrong after draining (a flush to disk that fails, say)."""

    async def aclose(self, drain: bool = True, *, timeout: float | None = None) -> None:
        await super().aclose(drain, timeout=timeout)
        raise OSError("disk full")


def test_a_failed_drain_is_reported_by_the_apps_shutdown(gate: Any) -> None:
    gate.open()
    batcher = CloseFails(gate, name="flaky")
    events: list[str] = []
    sent, raised = run(lifespan(starlette_with({"flaky": batcher}, events)))
    assert kinds(sent) == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert "OSError: disk full" in sent[1]["message"]
    assert isinstance(raised, OSError)
    assert batcher.closed


async def raises_on_lifespan(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "only HTTP here"


async def returns_on_lifespan(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return


async def reads_then_raises(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError("lifespan? never heard of it")


@pytest.mark.parametrize("app", [raises_on_lifespan, returns_on_lifespan, reads_then_raises])
def test_an_app_without_lifespan_support_still_gets_the_batchers_started_and_drained(
    app: App, make_batcher: Any
) -> None:
    batcher = make_batcher(name="no-lifespan")
    alive_at_startup: list[bool] = []
    at_startup = lambda: alive_at_startup.append(worker_alive(batcher))  # noqa: E731
    sent, raised = run(lifespan(BatchingMiddleware(app, batchers={"embed": batcher}), at_startup=at_startup))
    assert (kinds(sent), raised) == (["lifespan.startup.complete", "lifespan.shutdown.complete"], None)
    assert alive_at_startup == [True]
    assert batcher.closed


def test_an_app_that_breaks_during_its_shutdown_gets_a_failed_shutdown(make_batcher: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("shutdown went wrong")

    batcher = make_batcher()
    sent, raised = run(lifespan(BatchingMiddleware(app, batchers={"embed": batcher})))
    assert kinds(sent) == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert "RuntimeError: shutdown went wrong" in sent[1]["message"]
    assert isinstance(raised, RuntimeError)
    assert batcher.closed
