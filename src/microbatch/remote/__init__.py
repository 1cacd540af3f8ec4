"""microbatch.remote: one model shared by every web worker on every machine, over Redis Streams.

::

    from microbatch import Batcher
    from microbatch.remote import RemoteBatcher, serve

    # A model host (one process per model copy); or: microbatch serve package.module:fn --name embed --url ...
    serve(Batcher(embed_texts, max_batch_size=32, name="embed"), url="redis://127.0.0.1:6379/0")

    # Every web worker, in any process on any machine:
    embedder = RemoteBatcher("embed", url="redis://127.0.0.1:6379/0")
    vector = embedder("some text")          # or await embedder.acall(...), .map(...), .amap(...)

Delivery is at least once: a request whose host dies before replying runs again on another host.
Needs the ``remote`` extra (redis-py with hiredis, msgpack) and Redis 6.2 or newer.
"""

from __future__ import annotations

from .._remote_errors import RedisUnavailable, RemoteError
from ._client import RemoteBatcher
from ._codec import Codec, MsgpackCodec, PickleCodec
from ._host import Host, serve
from ._stats import ClientStats, HostStats, RemoteStats

__all__ = [
    "ClientStats",
    "Codec",
    "Host",
    "HostStats",
    "MsgpackCodec",
    "PickleCodec",
    "RedisUnavailable",
    "RemoteBatcher",
    "RemoteError",
    "RemoteStats",
    "serve",
]
