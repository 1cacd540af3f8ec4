"""asgi_microbatch: share microbatch batchers with Starlette, FastAPI or any ASGI app.

```python
app = Starlette(routes=..., middleware=[Middleware(BatchingMiddleware, batchers={"embed": embed})])
# in an endpoint
vector = await get_batcher(request, "embed").acall(text)
```
"""

from __future__ import annotations

from ._access import get_batcher
from ._exchange import Disconnects, ErrorHandler
from ._middleware import BatchingMiddleware

__all__ = ["BatchingMiddleware", "Disconnects", "ErrorHandler", "get_batcher"]
