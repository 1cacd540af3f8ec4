"""Settings read lazily, at each access, so that ``override_settings`` takes effect (as in django-cors-headers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from microbatch.web import TIMEOUT_HEADER

__all__ = ["conf"]


class Settings:
    """Shadow Django's settings: every property reads ``django.conf.settings`` when it is accessed."""

    @property
    def MICROBATCH(self) -> Mapping[str, Any]:
        """``{name: {"fn": "dotted.path.to.batch_fn", **options}}``; empty when the setting is absent."""
        value = getattr(settings, "MICROBATCH", {})
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(
                f"settings.MICROBATCH must be a dict of batcher name -> options, got {type(value).__name__}"
            )
        return value

    @property
    def MICROBATCH_TIMEOUT_HEADER(self) -> str | None:
        """The request header read as the request's time limit; None turns it off."""
        value = getattr(settings, "MICROBATCH_TIMEOUT_HEADER", TIMEOUT_HEADER)
        if value is not None and not (isinstance(value, str) and value):
            raise ImproperlyConfigured(
                f"settings.MICROBATCH_TIMEOUT_HEADER must be a header name like {TIMEOUT_HEADER!r}, or None to "
                f"turn it off; got {value!r}"
            )
        return value

    @property
    def MICROBATCH_ERROR_HANDLER(self) -> Callable[..., Any] | None:
        """``handler(request, exc, response) -> HttpResponse`` for batcher errors (a callable or its dotted path)."""
        value = getattr(settings, "MICROBATCH_ERROR_HANDLER", None)
        if isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(f"settings.MICROBATCH_ERROR_HANDLER cannot be imported: {exc}") from exc
        if value is not None and not callable(value):
            raise ImproperlyConfigured(
                "settings.MICROBATCH_ERROR_HANDLER must be a callable (request, exc, response) -> HttpResponse "
                f"or its dotted path, got {type(value).__name__}"
            )
        return value


conf = Settings()
