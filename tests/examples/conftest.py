"""The example service served for real: each framework's app on loopback, on the packaged model.

The model is loaded once per session (the apps share the process's model); every test gets fresh
apps, so batcher stats start at zero. Servers come from the shared fixtures of ``tests/conftest.py``:
uvicorn for Starlette and Django ASGI, werkzeug's threaded server for Flask and Django WSGI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

FRAMEWORKS = ("starlette", "flask", "django-asgi", "django-wsgi")

Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="session")
def embed() -> Callable[[list[str]], list[list[float]]]:
    """The model's own batch function, loaded once per session: ``embed(texts)`` -> vectors, no server."""
    from examples._embedder import embed_texts, load_model

    load_model()
    return embed_texts


def _django_settings(mode: str) -> dict[str, Any]:
    """The example project's settings, for ``override_settings``: another test package may have
    configured Django first, so these tests put the project's values in place themselves."""
    from examples import _api
    from examples.django_app import settings as project

    values = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    for name in ("INSTALLED_APPS", "DATABASES"):  # the same empty values; overriding them reloads apps
        values.pop(name)
    # Whatever MICROBATCH_MODE the settings module was imported under, the test says which mode it serves.
    values["EMBED_MODE"] = mode
    values["MICROBATCH"] = {} if mode == "unbatched" else {
        _api.BATCHER_NAME: {
            "fn": "examples._embedder.embed_texts",
            "max_batch_size": _api.MAX_BATCH_SIZE,
            "max_queue_size": _api.MAX_QUEUE_SIZE,
            "max_queue_delay_ms": _api.MAX_QUEUE_DELAY_MS,
            "coalesce": _api.COALESCE,
        }
    }
    return values


@pytest.fixture
def django_project() -> Callable[[str], AbstractContextManager[None]]:
    """``with django_project(mode):`` the example project's settings, with no batcher built before or left after."""
    import django
    from django.conf import settings
    from django.test import override_settings

    import django_microbatch

    if not settings.configured:
        django.setup()  # from DJANGO_SETTINGS_MODULE: the example project

    @contextmanager
    def project(mode: str) -> Iterator[None]:
        django_microbatch.close_all()
        try:
            with override_settings(**_django_settings(mode)):
                yield
        finally:
            django_microbatch.close_all()

    return project


@pytest.fixture
def serve(
    embed: Any, uvicorn_server: Callable[..., Any], wsgi_server: Callable[..., Any], django_project: Any
) -> Serve:
    """``with serve(framework, mode="batched") as url:`` a fresh app of ``framework`` on loopback."""

    @contextmanager
    def serving(framework: str, mode: str = "batched") -> Iterator[str]:
        if framework == "starlette":
            from examples import starlette_app

            with uvicorn_server(starlette_app.create_app(mode)) as url:
                yield url
        elif framework == "flask":
            from examples import flask_app

            app = flask_app.create_app(mode)
            try:
                with wsgi_server(app) as url:
                    yield url
            finally:
                if mode == "batched":
                    flask_app.mb.close(app)
        elif framework in ("django-asgi", "django-wsgi"):
            with django_project(mode):
                if framework == "django-asgi":
                    from examples.django_app.asgi import application

                    server = uvicorn_server
                else:
                    from examples.django_app.wsgi import application

                    server = wsgi_server
                with server(application) as url:
                    yield url
        else:
            raise ValueError(f"unknown framework {framework!r}; known: {FRAMEWORKS}")

    return serving
