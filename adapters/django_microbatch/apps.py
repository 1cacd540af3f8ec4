"""The Django app: in ``INSTALLED_APPS``, it has ``settings.MICROBATCH`` checked at startup by the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from ._checks import check_settings

__all__ = ["MicrobatchConfig"]


class MicrobatchConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    """Registers the check of ``settings.MICROBATCH`` with Django's system checks (tag ``microbatch``)."""

    name = "django_microbatch"
    verbose_name = "microbatch"

    def ready(self) -> None:
        checks.register(check_settings, "microbatch")
