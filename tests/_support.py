"""Helpers shared by the test packages (imported as ``tests._support``; conftests cannot import each other)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

WAIT = 10.0  # bounds a wait for something that should happen almost at once; no assertion depends on it


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Return once ``predicate()`` holds; fail the test naming ``what`` if it does not within ``timeout``.

    A wait for a condition (polled with sub-millisecond pauses, bounded by a deadline), not a sleep
    standing in for synchronisation: it returns as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        pause.wait(0.0005)


@pytest.fixture(autouse=True)
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.ExceptHookArgs]]:
    """Fail any test in which a thread (a batcher's worker above all) dies of an uncaught exception.

    Autouse wherever a conftest imports it.
    """
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    yield errors
    assert not errors, f"a thread died of an uncaught exception: {[(e.thread, e.exc_value) for e in errors]}"


class Translator:
    """A column batch function ``translate(texts, languages)`` for the adapters' column tests: it records
    each batch, and its first batch waits until ``release`` is set (so later calls queue behind it)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self.release = threading.Event()

    def __call__(self, texts: list[str], languages: list[str]) -> list[str]:
        self.batches.append(list(zip(texts, languages, strict=True)))
        if len(self.batches) == 1:
            self.release.wait(WAIT)
        return [f"{languages[0]}:{text}" for text in texts]  # one language per batch: the group guarantees it
