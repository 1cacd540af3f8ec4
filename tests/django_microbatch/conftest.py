"""Django configured for the adapter's tests, the fake model, and helpers for concurrent requests.

Django's settings are process-wide: they are configured here if nobody has yet, and every test
also runs under ``override_settings`` of the same values, so these tests own the settings they rely
on whichever test package configured Django first.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.test import AsyncClient, Client, override_settings

from tests._support import wait_until

sys.path.insert(0, str(Path(__file__).parent))  # makes djmb_app importable by dotted path

import djmb_app  # noqa: E402

import django_microbatch  # noqa: E402

WAIT = djmb_app.WAIT

PROJECT: dict[str, Any] = {
    "ALLOWED_HOSTS": ["*"],
    "ROOT_URLCONF": "djmb_app",
    "MIDDLEWARE": ["django_microbatch.MicrobatchMiddleware"],
    # max_wait_ms=0: a batch takes whatever is queued at once, so batch sizes depend only on the queue.
    "MICROBATCH": {"embed": {"fn": "djmb_app.embed_texts", "max_batch_size": 8, "max_wait_ms": 0}},
}

if not settings.configured:
    settings.configure(SECRET_KEY="django-microbatch-tests", INSTALLED_APPS=[], USE_TZ=True, **PROJECT)
    django.setup()


@pytest.fixture(autouse=True)
def project() -> Iterator[None]:
    """Each test starts with this project's settings, no batcher built yet, and a fresh fake model."""
    django_microbatch.close_all()
    djmb_app.MODEL.reset()
    with override_settings(**PROJECT):
        try:
            yield
        finally:
            djmb_app.MODEL.release()  # a failed test must not leave a drain waiting on the model
            django_microbatch.close_all()


@pytest.fixture
def model() -> djmb_app.FakeModel:
    """The fake model behind ``djmb_app.embed_texts``: ``hold()``, ``wait_blocked()``, ``release()``, ``sizes``."""
    return djmb_app.MODEL




@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[[Callable[[], bool], str], None]:
    """:func:`wait_until` (test modules cannot import the conftest)."""
    return wait_until


@pytest.fixture
def queued() -> Callable[[str, int], None]:
    """``queued(name, n)`` waits until exactly ``n`` items wait in the shared batcher ``name``."""

    def wait(name: str, n: int) -> None:
        batcher = django_microbatch.get_batcher(name)
        wait_until(lambda: batcher.stats.queue_depth == n, f"{name} has {n} items queued")

    return wait


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads to send concurrent requests from (one per request in flight)."""
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="client") as executor:
        yield executor


def _post(path: str, text: str, headers: dict[str, str] | None = None) -> Any:
    return Client().post(path, {"text": text}, content_type="application/json", headers=headers or {})


def _apost(path: str, text: str, headers: dict[str, str] | None = None) -> Any:
    request = AsyncClient().post(path, {"text": text}, content_type="application/json", headers=headers or {})
    return asyncio.run(request)


@pytest.fixture
def post() -> Callable[..., Any]:
    """``post(path, text, headers=None)`` sends ``{"text": text}`` through Django's test Client (sync handler)."""
    return _post


@pytest.fixture(params=["Client", "AsyncClient"])
def send(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """:func:`post` through the sync test Client, then through the AsyncClient (Django's async handler).

    Under the AsyncClient, sync views and ``process_exception`` run on asgiref's single
    thread-sensitive thread, as under an ASGI server.
    """
    return _post if request.param == "Client" else _apost
