"""django_microbatch: Django views share ``microbatch.Batcher`` instances configured in ``settings.MICROBATCH``.

```python
# settings.py
MICROBATCH = {"embed": {"fn": "myproject.models.embed_texts", "max_batch_size": 32}}
MIDDLEWARE = [..., "django_microbatch.MicrobatchMiddleware"]   # X-Request-Timeout, errors of function views

# views.py
class EmbedView(BatchedViewMixin, View):
    batcher_name = "embed"
    async def post(self, request): return JsonResponse({"vector": await self.get_batcher().acall(text)})
```

Each entry takes ``fn`` (a dotted path or a callable), the ``microbatch.Batcher`` options
``max_batch_size``, ``max_wait_ms``, ``small_request_size``, ``max_queue_size``, ``on_error``,
``aging_ms``, and ``timeout`` (default seconds per call). Sync views batch under WSGI and ASGI alike
(Django gives each request its own thread for sync code); under ASGI prefer async views, which wait
on the event loop instead of holding a thread per request.
"""

from __future__ import annotations

from ._middleware import MicrobatchMiddleware
from ._registry import close_all, get_batcher
from ._views import BatchedViewMixin

__all__ = ["BatchedViewMixin", "MicrobatchMiddleware", "close_all", "get_batcher"]
