"""A one-file Django project whose batcher ``t`` is remote (settings, URLs and the ASGI app in one module).

Run as ``DJANGO_SETTINGS_MODULE=tests.remote._django_site uvicorn tests.remote._django_site:application``
with ``MB_TEST_REDIS`` set. Its ``fn`` names a function that does not exist: a remote entry never imports it.
"""

from __future__ import annotations

import json
import os

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views import View

from django_microbatch import BatchedViewMixin, get_batcher

SECRET_KEY = "django-microbatch-remote-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django_microbatch"]
DATABASES: dict[str, object] = {}
USE_TZ = True
ROOT_URLCONF = __name__
MIDDLEWARE = ["django_microbatch.MicrobatchMiddleware"]
MICROBATCH = {
    "t": {"fn": "tests.remote._targets.no_such_model", "remote": os.environ["MB_TEST_REDIS"], "timeout": 5,
          "max_batch_size": 8},
}


class Echo(BatchedViewMixin, View):  # type: ignore[misc]  # Django ships no type information
    batcher_name = "t"

    async def post(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"result": await self.get_batcher().acall(json.loads(request.body)["text"])})


def sync_echo(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"result": get_batcher("t")(json.loads(request.body)["text"])})


def kind(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"type": type(get_batcher("t")).__name__})


urlpatterns = [path("echo", Echo.as_view()), path("sync-echo", sync_echo), path("kind", kind)]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)

from django.core.asgi import get_asgi_application  # noqa: E402 - needs the settings module named first

application = get_asgi_application()
