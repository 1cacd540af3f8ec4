"""URLs for ASGI (the ``ROOT_URLCONF``): the async ``/embed`` view. WSGI requests use :mod:`.urls_wsgi`."""

from __future__ import annotations

from django.urls import URLPattern, path
from django.views import View

from . import views

__all__ = ["handler400", "handler404", "routes", "urlpatterns"]


def routes(embed_view: type[View]) -> list[URLPattern]:
    """The service's routes with the given ``/embed`` view class."""
    return [
        path("embed", embed_view.as_view()),
        path("healthz", views.healthz),
        path("stats", views.stats),
        path("metrics", views.metrics),
    ]


urlpatterns = routes(views.AsyncEmbedView)
handler400 = views.bad_request
handler404 = views.not_found
