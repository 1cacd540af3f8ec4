"""BatchedViewMixin through Django's test clients: batching, each caller's own result, error mapping.

These run without MicrobatchMiddleware, so the mixin alone must map the batcher's errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

import django_microbatch

WAIT = 10.0
TINY = {"fn": "djmb_app.embed_texts", "max_batch_size": 1, "max_queue_size": 1, "max_wait_ms": 0}


@pytest.fixture(autouse=True)
def without_middleware(project: None) -> Iterator[None]:
    with override_settings(MIDDLEWARE=[]):
        yield


@pytest.mark.parametrize("path", ["/sync/", "/async/"])
def test_concurrent_requests_share_a_batch(
    path: str, model: Any, queued: Callable[[str, int], None], pool: ThreadPoolExecutor, post: Callable[..., Any]
) -> None:
    # Sync views block their own thread; async views run on one-off loops under the sync client.
    model.hold()
    first = pool.submit(post, path, "t0")
    model.wait_blocked()
    rest = [pool.submit(post, path, f"t{i}") for i in range(1, 6)]
    queued("embed", 5)
    model.release()
    responses = [future.result(WAIT) for future in [first, *rest]]
    assert [(r.status_code, r.json()) for r in responses] == [(200, {"vector": f"vec(t{i})"}) for i in range(6)]
    assert model.sizes == [1, 5]


def test_async_view_batches_on_one_event_loop(model: Any, queued: Callable[[str, int], None]) -> None:
    async def main() -> list[Any]:
        client = AsyncClient()

        def send(text: str) -> asyncio.Task[Any]:
            return asyncio.ensure_future(client.post("/async/", {"text": text}, content_type="application/json"))

        first = send("t0")
        await asyncio.to_thread(model.wait_blocked)
        rest = [send(f"t{i}") for i in range(1, 8)]
        await asyncio.to_thread(queued, "embed", 7)
        model.release()
        return await asyncio.gather(first, *rest)

    model.hold()
    responses = asyncio.run(main())
    assert [r.json() for r in responses] == [{"vector": f"vec(t{i})"} for i in range(8)]
    assert model.sizes == [1, 7]


@pytest.mark.parametrize("path", ["/sync/tiny/", "/async/tiny/"])
def test_overloaded_is_503_with_retry_after(
    path: str, model: Any, queued: Callable[[str, int], None], pool: ThreadPoolExecutor, post: Callable[..., Any]
) -> None:
    with override_settings(MICROBATCH={"tiny": TINY}):
        model.hold()
        running = pool.submit(post, path, "a")
        model.wait_blocked()
        waiting = pool.submit(post, path, "b")
        queued("tiny", 1)
        refused = post(path, "c")
        model.release()
        assert refused.status_code == 503
        assert int(refused["Retry-After"]) >= 1
        assert "overloaded" in refused.json()["error"] and "'tiny'" not in refused.json()["error"]
        assert running.result(WAIT).json() == {"vector": "vec(a)"}
        assert waiting.result(WAIT).json() == {"vector": "vec(b)"}
        assert django_microbatch.get_batcher("tiny").stats.rejected == 1


@pytest.mark.parametrize("path", ["/sync/slow/", "/async/slow/"])
def test_configured_timeout_is_504(path: str, model: Any, post: Callable[..., Any]) -> None:
    with override_settings(MICROBATCH={"slow": {"fn": "djmb_app.embed_texts", "timeout": 0.05}}):
        model.hold()  # released only after the response: the deadline is the only way out
        response = post(path, "late")
        model.release()
    assert response.status_code == 504
    assert "time limit" in response.json()["error"]


@pytest.mark.parametrize("path", ["/sync/", "/async/"])
def test_closed_batcher_is_503(path: str, model: Any, post: Callable[..., Any]) -> None:
    django_microbatch.get_batcher("embed").close()
    response = post(path, "x")
    assert response.status_code == 503
    assert "shutting down" in response.json()["error"]
    assert "Retry-After" not in response
    assert model.sizes == []


@pytest.mark.parametrize("path", ["/sync/", "/async/"])
def test_model_errors_pass_through_unmapped(path: str, post: Callable[..., Any]) -> None:
    # The test client re-raises a view's unhandled exception: nothing turned it into a 503/504.
    with pytest.raises(ValueError, match="cannot embed 'boom'"):
        post(path, "boom")
    assert post(path, "fine").json() == {"vector": "vec(fine)"}


def test_async_view_behind_a_mixin_that_answers_synchronously(send: Callable[..., Any]) -> None:
    assert send("/guarded/", "x").json() == {"vector": "vec(x)"}
    stopped = send("/guarded/?stop=1", "x")
    assert (stopped.status_code, stopped.content) == (403, b"stopped")
