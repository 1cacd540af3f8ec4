"""WSGI entry point: ``gunicorn -k gthread --threads 64 examples.django_app.wsgi:application`` (sync views)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from examples._embedder import load_model

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = get_wsgi_application()
if settings.EMBED_REMOTE is None:  # else the model runs in the hosts only
    load_model()  # at startup, not in the first request
