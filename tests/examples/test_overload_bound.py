"""The demo service bounds queueing by predicted wait (``max_queue_delay_ms``, 1000 ms) in every
framework; ``EMBED_MAX_QUEUE_DELAY_MS`` overrides it for a load run's comparison."""

from __future__ import annotations

import pytest

from examples import _api


def test_the_bound_is_a_second_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_api.MAX_QUEUE_DELAY_MS_ENV, raising=False)
    assert _api.max_queue_delay_ms() == _api.MAX_QUEUE_DELAY_MS == 1000.0
    monkeypatch.setenv(_api.MAX_QUEUE_DELAY_MS_ENV, "250")
    assert _api.max_queue_delay_ms() == 250.0
    monkeypatch.setenv(_api.MAX_QUEUE_DELAY_MS_ENV, "off")
    assert _api.max_queue_delay_ms() is None
    monkeypatch.setenv(_api.MAX_QUEUE_DELAY_MS_ENV, "soon")
    with pytest.raises(ValueError, match=r"EMBED_MAX_QUEUE_DELAY_MS must be a number of milliseconds or 'off'"):
        _api.max_queue_delay_ms()


def test_every_framework_configures_its_batcher_with_the_bound() -> None:
    from flask import Flask

    from examples import flask_app
    from examples.django_app import settings

    assert settings.MICROBATCH == {} or settings.MICROBATCH[_api.BATCHER_NAME]["max_queue_delay_ms"] == 1000.0
    assert flask_app.embed.settings(Flask("probe"))["max_queue_delay_ms"] == 1000.0
