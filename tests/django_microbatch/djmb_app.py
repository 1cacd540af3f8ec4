"""The Django project under test (ROOT_URLCONF): a fake batch function that records batch sizes, views, URLs.

The conftest puts this directory on ``sys.path`` so that ``settings.MICROBATCH`` can name
``djmb_app.embed_texts`` by dotted path, as a real project would.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import path
from django.views import View

from django_microbatch import BatchedViewMixin, get_batcher
from microbatch.web import ErrorResponse

# Upper bound for a wait that should end almost at once; it only limits how long a failing test hangs.
WAIT = 10.0


class FakeModel:
    """The batch function's body: records each batch's size; while held, every batch blocks until released.

    ``"vec(<text>)"`` for each text, so each caller can check it got its own result; the text
    ``"boom"`` raises ValueError (an error of the model itself, which no adapter should map).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.held = False
        self.blocked = 0  # batches waiting for release right now
        self.sizes: list[int] = []

    def __call__(self, texts: list[str]) -> list[str]:
        with self._cond:
            self.sizes.append(len(texts))
            self.blocked += 1
            self._cond.notify_all()
            released = self._cond.wait_for(lambda: not self.held, WAIT)
            self.blocked -= 1
        if not released:
            raise RuntimeError("the test never released the fake model")
        if "boom" in texts:
            raise ValueError("the model cannot embed 'boom'")
        return [f"vec({text})" for text in texts]

    def hold(self) -> None:
        """Make every batch block in the model until :meth:`release`."""
        with self._cond:
            self.held = True

    def release(self) -> None:
        with self._cond:
            self.held = False
            self._cond.notify_all()

    def wait_blocked(self) -> None:
        """Wait until a batch is held in the model (so the batcher's worker is busy)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.blocked > 0, WAIT):
                raise AssertionError("no batch reached the held model")

    def reset(self) -> None:
        with self._cond:
            self.held = False
            self.blocked = 0
            self.sizes = []
            self._cond.notify_all()


MODEL = FakeModel()


# The names of the threads ``note_worker`` ran on: settings name it as a batcher's on_worker_start.
worker_starts: list[str] = []


def note_worker() -> None:
    worker_starts.append(threading.current_thread().name)


def embed_texts(texts: list[str]) -> list[str]:
    """The batch function that settings.MICROBATCH names by dotted path."""
    return MODEL(texts)


def casefolded(text: str) -> str:
    """A coalesce key function that settings name by dotted path: texts differing only in case are one item."""
    return text.casefold()


def _text(request: HttpRequest) -> str:
    return str(json.loads(request.body)["text"])


class EmbedView(BatchedViewMixin, View):  # type: ignore[misc]  # Django ships no type information
    batcher_name = "embed"

    def post(self, request: HttpRequest, **kwargs: str) -> JsonResponse:
        return JsonResponse({"vector": self.get_batcher()(_text(request))})


class AsyncEmbedView(BatchedViewMixin, View):  # type: ignore[misc]  # Django ships no type information
    batcher_name = "embed"

    async def post(self, request: HttpRequest, **kwargs: str) -> JsonResponse:
        return JsonResponse({"vector": await self.get_batcher().acall(_text(request))})


class NamedEmbedView(EmbedView):
    """Chooses its batcher per request through the hook: ``/sync/<name>/``."""

    def get_batcher_name(self) -> str:
        return str(self.kwargs["name"])


class AsyncNamedEmbedView(AsyncEmbedView):
    def get_batcher_name(self) -> str:
        return str(self.kwargs["name"])


class ShortCircuitMixin:
    """Answers ``?stop=1`` itself with a plain response, as access mixins do, even for an async view."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.GET.get("stop"):
            return HttpResponse("stopped", status=403)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class GuardedAsyncEmbedView(BatchedViewMixin, ShortCircuitMixin, View):  # type: ignore[misc]  # Django ships no type information
    batcher_name = "embed"

    async def post(self, request: HttpRequest, **kwargs: str) -> HttpResponseBase:
        return JsonResponse({"vector": await self.get_batcher().acall(_text(request))})


class UnnamedView(BatchedViewMixin, View):  # type: ignore[misc]  # Django ships no type information
    def post(self, request: HttpRequest, **kwargs: str) -> JsonResponse:
        return JsonResponse({"vector": self.get_batcher()(_text(request))})


class DetailEmbedView(AsyncEmbedView):
    """Answers batcher errors FastAPI-style, through the mixin's hook."""

    def get_error_response(
        self, exc: Exception, response: ErrorResponse, default: HttpResponseBase
    ) -> HttpResponseBase:
        return JsonResponse({"detail": response.error}, status=response.status, headers=response.headers)


def detail_error(request: HttpRequest, exc: Exception, response: ErrorResponse) -> HttpResponseBase:
    """A settings.MICROBATCH_ERROR_HANDLER: FastAPI-style bodies, and the path in a header."""
    return JsonResponse({"detail": response.error}, status=response.status, headers={"X-Path": request.path})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})  # makes no batcher call


def embed_function(request: HttpRequest, name: str) -> JsonResponse:
    """A function view: its batcher errors are mapped by MicrobatchMiddleware."""
    return JsonResponse({"vector": get_batcher(name)(_text(request))})


async def aembed_function(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"vector": await get_batcher(name).acall(_text(request))})


urlpatterns = [
    path("sync/", EmbedView.as_view()),
    path("async/", AsyncEmbedView.as_view()),
    path("sync/<str:name>/", NamedEmbedView.as_view()),
    path("async/<str:name>/", AsyncNamedEmbedView.as_view()),
    path("guarded/", GuardedAsyncEmbedView.as_view()),
    path("unnamed/", UnnamedView.as_view()),
    path("detail/", DetailEmbedView.as_view()),
    path("healthz/", healthz),
    path("fn/<str:name>/", embed_function),
    path("afn/<str:name>/", aembed_function),
]
