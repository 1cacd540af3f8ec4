"""Fixtures for the flask_microbatch tests: the served app (loaded from ``served_app.py``, which the
gunicorn test also serves), bounded waits for conditions, and blocking requests run on threads."""

from __future__ import annotations

import contextvars
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests._support import wait_until

HERE = Path(__file__).parent
# Upper bound on a wait for a condition that should hold almost at once: it only limits how long a
# failing test hangs, no assertion depends on it.
WAIT = 10.0


def _load_served_app() -> Any:
    # Tests cannot import siblings under --import-mode=importlib; load the module by path instead.
    spec = importlib.util.spec_from_file_location("flask_microbatch_served_app", HERE / "served_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


served = _load_served_app()




class InThread:
    """``fn(*args)`` running on a thread of its own, in a copy of the caller's context (so an app context
    the test pushed is there too); :meth:`result` joins it and returns or re-raises."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run, fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            self.value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever it got
            self.error = exc

    def result(self, timeout: float = WAIT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the call did not finish within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def served_app() -> Any:
    """The ``served_app`` module: ``create_app``, ``embed``, ``mb``, ``Gate``."""
    return served


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """``make_app(name, **config)`` builds a served app; at teardown its gate opens and its batchers close."""
    apps: list[Flask] = []

    def make(name: str = "served", **config: Any) -> Flask:
        app: Flask = served.create_app(name, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.config["GATE"].open()
        served.mb.close(app)


@pytest.fixture
def in_thread() -> type[InThread]:
    """``in_thread(fn, *args)`` runs a blocking call on its own thread; ``.result()`` collects it."""
    return InThread


@pytest.fixture
def until() -> Callable[..., None]:
    """``until(predicate, what)``: a bounded wait for a condition, never a fixed sleep."""
    return wait_until
