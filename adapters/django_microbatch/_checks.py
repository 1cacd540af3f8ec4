"""System checks: ``settings.MICROBATCH`` is checked when Django starts (``manage.py check``, ``runserver``,
``migrate``), not at the first request. Registered by :class:`django_microbatch.apps.MicrobatchConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error
from django.core.exceptions import ImproperlyConfigured

from ._conf import conf
from ._registry import configure

__all__ = ["check_settings"]


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """One error per misconfigured entry of ``settings.MICROBATCH`` (E001 the setting itself, E002 an entry).

    Each entry is checked as its batcher would be built: options against the engine's schema, and
    ``fn`` (and a ``collate`` given as a dotted path) imported.
    """
    try:
        configured = conf.MICROBATCH
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Set MICROBATCH = {name: {'fn': ..., **options}}.", id="django_microbatch.E001")]
    errors: list[CheckMessage] = []
    for name, entry in configured.items():
        try:
            configure(name, entry)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), obj=f"settings.MICROBATCH[{name!r}]", id="django_microbatch.E002"))
    return errors
