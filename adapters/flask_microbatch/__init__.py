"""flask_microbatch: a Flask extension that batches each request's model calls, one batcher per app.

```python
mb = Microbatch(app)                 # or mb = Microbatch(); mb.init_app(app) in an app factory
@mb.batch(max_batch_size=32)
def embed(texts): return model.encode(texts)
# in a view: vector = embed(request.json["text"])   (blocks this request's thread only)
```
"""

from __future__ import annotations

from ._batched import BatchedFunction, BatchOptions
from ._extension import Microbatch

__all__ = ["BatchOptions", "BatchedFunction", "Microbatch"]
