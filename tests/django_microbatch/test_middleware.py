"""MicrobatchMiddleware: the X-Request-Timeout deadline, and error mapping for function views, sync and async."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
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
    assert late.json() == {"error": "the request's time limit passed before its result was ready"}
    assert running.result(WAIT).json() == {"vector": "vec(a)"}
    assert model.sizes == [1]


@pytest.mark.parametrize("path", ALL_VIEWS)
def test_a_request_within_its_timeout_succeeds(path: str, send: Callable[..., Any]) -> None:
    response = send(path, "x", {"X-Request-Timeout": "30"})
    assert (response.status_code, response.json()) == (200, {"vector": "vec(x)"})


@pytest.mark.parametrize("value", ["soon", "", "0", "-1", "nan", "inf", "5 min"])
def test_a_malformed_request_timeout_is_400_only_for_views_that_call_a_batcher(
    value: str, send: Callable[..., Any], model: Any
) -> None:
    assert send("/healthz/", "x", {"X-Request-Timeout": value}).json() == {"status": "ok"}
    for path in ALL_VIEWS:
        response = send(path, "x", {"X-Request-Timeout": value})
        assert response.status_code == 400, path
        assert response.json() == {
            "error": f"X-Request-Timeout must be a time > 0 in seconds, like 2.5, 5s or 5000ms, got {value!r}: "
            "fix or drop the header"
        }
    assert model.sizes == []
    assert send("/afn/embed/", "y").json() == {"vector": "vec(y)"}


@pytest.mark.parametrize("value", ["5s", "5000ms"])
def test_a_request_timeout_with_a_unit_is_accepted(value: str, send: Callable[..., Any]) -> None:
    assert send("/afn/embed/", "x", {"X-Request-Timeout": value}).json() == {"vector": "vec(x)"}


def test_the_timeout_header_is_a_setting_renamed_or_off(send: Callable[..., Any], model: Any) -> None:
    with override_settings(MICROBATCH_TIMEOUT_HEADER="X-Deadline"):
        assert send("/fn/embed/", "x", {"X-Request-Timeout": "soon"}).json() == {"vector": "vec(x)"}
        assert send("/fn/embed/", "x", {"X-Deadline": "soon"}).status_code == 400
    with override_settings(MICROBATCH_TIMEOUT_HEADER=None):
        assert send("/fn/embed/", "y", {"X-Request-Timeout": "soon"}).json() == {"vector": "vec(y)"}
    with override_settings(MICROBATCH_TIMEOUT_HEADER=5), pytest.raises(ImproperlyConfigured, match="or None"):
        send("/fn/embed/", "z")


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
        assert refused.json() == {"error": "the server is overloaded: retry after the number of seconds in Retry-After"}
        assert running.result(WAIT).json() == {"vector": "vec(a)"}
        assert waiting.result(WAIT).json() == {"vector": "vec(b)"}


@pytest.mark.parametrize("path", ["/fn/embed/", "/afn/embed/"])
def test_closed_batcher_in_function_view_is_503(path: str, send: Callable[..., Any]) -> None:
    django_microbatch.get_batcher("embed").close()
    response = send(path, "x")
    assert response.status_code == 503
    assert "shutting down" in response.json()["error"]


@pytest.mark.parametrize("path", ["/fn/embed/", "/afn/embed/", "/sync/", "/async/"])
def test_the_error_handler_setting_answers_for_function_and_class_based_views(
    path: str, send: Callable[..., Any]
) -> None:
    django_microbatch.get_batcher("embed").close()
    with override_settings(MICROBATCH_ERROR_HANDLER="djmb_app.detail_error"):
        response = send(path, "x")
    assert (response.status_code, response["X-Path"]) == (503, path)
    assert response.json() == {"detail": "the server is shutting down and accepts no new work: retry the request"}


def test_a_view_can_answer_errors_its_own_way(send: Callable[..., Any]) -> None:
    django_microbatch.get_batcher("embed").close()
    response = send("/detail/", "x")
    assert response.status_code == 503
    assert response.json() == {"detail": "the server is shutting down and accepts no new work: retry the request"}


@pytest.mark.parametrize("path", ["/fn/embed/", "/afn/embed/"])
def test_function_view_model_errors_pass_through(path: str, send: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="cannot embed 'boom'"):
        send(path, "boom")
