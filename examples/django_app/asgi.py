"""ASGI entry point: ``uvicorn examples.django_app.asgi:application`` (async views, one event loop)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from examples._embedder import load_model

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = get_asgi_application()
load_model()  # at startup, not in the first request
