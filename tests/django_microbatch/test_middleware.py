"""MicrobatchMiddleware: the X-Request-Timeout deadline, and error mapping for function views, sync and async."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

import django_microbatch

WAIT = 10.0
ALL_VIEWS = ["/sync/", "/async/", "/fn/embed/", "/afn/embed/"]


def test_serves_sync_and_async_chains() -> None:
    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert django_microbatch.MicrobatchMiddleware.sync_capable and django_microbatch.MicrobatchMiddleware.async_capable
    assert iscoroutinefunction(django_microbatch.MicrobatchMiddleware(async_view))
    assert not iscoroutinefunction(django_microbatch.MicrobatchMiddleware(sync_view))


@pytest.mark.parametrize("path", ALL_VIEWS)
def test_request_timeout_header_is_504_and_the_item_never_runs(
    path: str,
    send: Callable[..., Any],
    post: Callable[..., Any],
    model: Any,
    pool: ThreadPoolExecutor,
) -> None:
    model.hold()
    running = pool.submit(post, "/fn/embed/", "a")  # keeps the batcher's worker busy in the model
    model.wait_blocked()
    late = send(path, "late", {"X-Request-Timeout": "0.05"})
    model.release()
    assert late.status_code == 504
    assert "'embed' passed its deadline before it was dispatched" in late.json()["error"]
    assert running.result(WAIT).json() == {"vector": "vec(a)"}
    assert model.sizes == [1]


@pytest.mark.parametrize("path", ALL_VIEWS)
def test_a_request_within_its_timeout_succeeds(path: str, send: Callable[..., Any]) -> None:
    response = send(path, "x", {"X-Request-Timeout": "30"})
    assert (response.status_code, response.json()) == (200, {"vector": "vec(x)"})


@pytest.mark.parametrize("value", ["soon", "", "0", "-1", "nan", "inf"])
def test_invalid_request_timeout_is_400(value: str, send: Callable[..., Any], model: Any) -> None:
    response = send("/afn/embed/", "x", {"X-Request-Timeout": value})
    assert response.status_code == 400
    assert response.json() == {"error": f"X-Request-Timeout must be a number of seconds > 0, got {value!r}"}
    assert model.sizes == []
    assert send("/afn/embed/", "y").json() == {"vector": "vec(y)"}


@pytest.mark.parametrize("path", ["/fn/tiny/", "/afn/tiny/"])
def test_overloaded_function_view_is_503_with_retry_after(
    path: str,
    send: Callable[..., Any],
    post: Callable[..., Any],
    model: Any,
    queued: Callable[[str, int], None],
    pool: ThreadPoolExecutor,
) -> None:
    tiny = {"fn": "djmb_app.embed_texts", "max_batch_size": 1, "max_queue_size": 1, "max_wait_ms": 0}
    with override_settings(MICROBATCH={"tiny": tiny}):
        model.hold()
        running = pool.submit(post, "/fn/tiny/", "a")
        model.wait_blocked()
        waiting = pool.submit(post, "/fn/tiny/", "b")
        queued("tiny", 1)
        refused = send(path, "c")
        model.release()
        assert refused.status_code == 503
        assert int(refused["Retry-After"]) >= 1
        assert "max_queue_size=1" in refused.json()["error"]
        assert running.result(WAIT).json() == {"vector": "vec(a)"}
        assert waiting.result(WAIT).json() == {"vector": "vec(b)"}


@pytest.mark.parametrize("path", ["/fn/embed/", "/afn/embed/"])
def test_closed_batcher_in_function_view_is_503(path: str, send: Callable[..., Any]) -> None:
    django_microbatch.get_batcher("embed").close()
    response = send(path, "x")
    assert response.status_code == 503
    assert "closed" in response.json()["error"]


@pytest.mark.parametrize("path", ["/fn/embed/", "/afn/embed/"])
def test_function_view_model_errors_pass_through(path: str, send: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="cannot embed 'boom'"):
        send(path, "boom")
