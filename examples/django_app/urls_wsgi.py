"""URLs for WSGI: the sync ``/embed`` view (see :mod:`.middleware`)."""

from __future__ import annotations

from . import views
from .urls import handler400, handler404, routes

__all__ = ["handler400", "handler404", "urlpatterns"]

urlpatterns = routes(views.EmbedView)
