"""The service's views: one sync and one async ``/embed`` view over the shared batcher, and the read-only views.

The sync :class:`EmbedView` serves WSGI (it blocks its request's thread on the batcher); the async
:class:`AsyncEmbedView` serves ASGI (it awaits ``acall``/``amap``). Unbatched (``EMBED_MODE``), they
call the model directly: the sync view on its request's thread, the async view on a worker thread
(``sync_to_async(thread_sensitive=False)``), concurrently and without a lock, as a plain app would.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views import View

import django_microbatch
from django_microbatch import BatchedViewMixin
from examples import _api
from examples._embedder import embed_texts
from microbatch.prometheus import StatsSource

__all__ = ["AsyncEmbedView", "EmbedView", "bad_request", "healthz", "metrics", "not_found", "stats"]


def _batched() -> bool:
    return bool(settings.EMBED_MODE == "batched")  # read per request, so override_settings applies


def _batchers() -> dict[str, StatsSource]:
    return {_api.BATCHER_NAME: django_microbatch.get_batcher(_api.BATCHER_NAME)} if _batched() else {}


_metrics = _api.Metrics(_batchers)


def _parse(request: HttpRequest) -> _api.EmbedRequest:
    try:
        body = request.body
    except RequestDataTooBig:
        raise _api.too_large() from None
    return _api.parse_embed_request(body)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


class _EmbedBase(BatchedViewMixin, View):  # type: ignore[misc]  # Django ships no type information
    batcher_name = _api.BATCHER_NAME

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # Django's own 405 has no body; every client error of the service is JSON.
        response = _error(405, f"method {request.method} is not allowed on {request.path}")
        response["Allow"] = ", ".join(self._allowed_methods())
        if self.view_is_async:

            async def answer() -> HttpResponseBase:
                return response

            return answer()
        return response


class EmbedView(_EmbedBase):
    """``POST /embed`` for WSGI: a sync view, one thread per request."""

    def post(self, request: HttpRequest) -> HttpResponseBase:
        try:
            parsed = _parse(request)
        except _api.BadRequest as exc:
            return JsonResponse(exc.body, status=exc.status)
        if not _batched():
            vectors = embed_texts(parsed.texts)
        elif parsed.single:
            vectors = [self.get_batcher()(parsed.texts[0])]
        else:
            vectors = self.get_batcher().map(parsed.texts)
        return HttpResponse(_api.json_bytes(parsed.response(vectors)), content_type=_api.JSON_CONTENT_TYPE)


class AsyncEmbedView(_EmbedBase):
    """``POST /embed`` for ASGI: an async view that never blocks the event loop."""

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        try:
            parsed = _parse(request)
        except _api.BadRequest as exc:
            return JsonResponse(exc.body, status=exc.status)
        if not _batched():
            vectors = await sync_to_async(embed_texts, thread_sensitive=False)(parsed.texts)
        elif parsed.single:
            vectors = [await self.get_batcher().acall(parsed.texts[0])]
        else:
            vectors = await self.get_batcher().amap(parsed.texts)
        return HttpResponse(_api.json_bytes(parsed.response(vectors)), content_type=_api.JSON_CONTENT_TYPE)


# The read-only views are sync, for both servers: they are quick, and under ASGI Django runs them on a
# worker thread.
def healthz(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(_api.health_body(settings.EMBED_MODE))


def stats(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(_api.stats_body(settings.EMBED_MODE, _batchers()))


def metrics(request: HttpRequest) -> HttpResponseBase:
    return HttpResponse(_metrics.render(), content_type=_api.METRICS_CONTENT_TYPE)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    return _error(404, f"no such path: {request.path}")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    return _error(400, "bad request")
