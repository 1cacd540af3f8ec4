"""Settings of the example project. ``MICROBATCH_MODE=unbatched`` serves it without a batcher;
``MICROBATCH_REMOTE=redis://...`` sends the batcher's calls to the model hosts serving ``embed`` there."""

from __future__ import annotations

import os

from examples import _api

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "examples-only-no-sessions-or-auth-use-it")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
INSTALLED_APPS = ["django_microbatch"]  # checks settings.MICROBATCH at startup (manage.py check)
DATABASES: dict[str, object] = {}
USE_TZ = True

ROOT_URLCONF = "examples.django_app.urls"
MIDDLEWARE = [
    "examples.django_app.middleware.ServerViews",
    "django_microbatch.MicrobatchMiddleware",  # X-Request-Timeout on every batcher call
]
# Django refuses a longer body (RequestDataTooBig) before reading it; the views answer 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = _api.MAX_BODY_BYTES

EMBED_MODE = _api.resolve_mode()
EMBED_REMOTE = _api.resolve_remote(EMBED_MODE)  # the model loads only in the hosts when set
MICROBATCH = (
    {
        _api.BATCHER_NAME: {
            "fn": "examples._embedder.embed_texts",
            "max_batch_size": _api.MAX_BATCH_SIZE,
            "max_queue_size": _api.MAX_QUEUE_SIZE,
            "max_queue_delay_ms": _api.max_queue_delay_ms(),
            "on_worker_start": "examples._embedder.setup_worker_thread",
            "coalesce": _api.COALESCE,
            "remote": EMBED_REMOTE,
        }
    }
    if EMBED_MODE == "batched"
    else {}
)
