"""django_microbatch: Django views share ``microbatch.Batcher`` instances configured in ``settings.MICROBATCH``.

```python
# settings.py
INSTALLED_APPS = [..., "django_microbatch"]                # checks settings.MICROBATCH at startup
MICROBATCH = {"embed": {"fn": "myproject.models.embed_texts", "max_batch_size": 32}}
MIDDLEWARE = [..., "django_microbatch.MicrobatchMiddleware"]   # X-Request-Timeout, errors of function views

# views.py
class EmbedView(BatchedViewMixin, View):
    batcher_name = "embed"
    async def post(self, request): return JsonResponse({"vector": await self.get_batcher().acall(text)})
```

Each entry takes ``fn`` (a dotted path or a callable) and every ``microbatch.Batcher`` option but
``name`` (the entry's key names it): ``collate`` may be a dotted path too. With ``"remote":
"redis://..."`` the entry's batcher is a ``microbatch.remote.RemoteBatcher`` calling the model hosts
that serve its name (``microbatch serve ... --name NAME``): ``fn`` is not imported, and only
``timeout`` and ``max_queue_size`` apply here (the other options configure the hosts). Add ``"django_microbatch"``
to ``INSTALLED_APPS`` (its ``apps.MicrobatchConfig``) to have the entries checked at startup by
Django's system checks rather than at the first request. Sync views batch under WSGI and ASGI alike
(Django gives each request its own thread for sync code); under ASGI prefer async views, which wait
on the event loop instead of holding a thread per request.
"""

from __future__ import annotations

from . import apps
from ._middleware import MicrobatchMiddleware
from ._registry import close_all, get_batcher
from ._views import BatchedViewMixin

__all__ = ["BatchedViewMixin", "MicrobatchMiddleware", "apps", "close_all", "get_batcher"]
