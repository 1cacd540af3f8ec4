"""Settings read lazily, at each access, so that ``override_settings`` takes effect (as in django-cors-headers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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


conf = Settings()
