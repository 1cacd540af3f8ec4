"""Connecting to Redis, reading its clock, and telling which server answers after an outage.

URLs pass through to redis-py; timeouts are short so that an outage surfaces within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

__all__ = [
    "CONNECT_TIMEOUT", "OUTAGE", "async_client", "clock_offset", "redacted", "server_after_outage", "sync_client",
]

#: Seconds to wait for a connection or a reply. One retry on a fresh connection (a pooled one may
#: have died with an old server), so a refused or silent Redis is reported within about a second.
CONNECT_TIMEOUT = 0.5

#: The redis-py errors that mean "Redis is not reachable" (as opposed to a command error).
OUTAGE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


def _options(socket_timeout: float | None) -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 0,
    }


def sync_client(url: str, *, socket_timeout: float | None = CONNECT_TIMEOUT) -> redis.Redis:
    """A redis-py client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``; user, password and
    database in the URL as redis-py reads them). ``socket_timeout`` must exceed any BLOCK time used."""
    return redis.Redis.from_url(url, **_options(socket_timeout))


def async_client(url: str, *, socket_timeout: float | None = CONNECT_TIMEOUT) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`sync_client`, for a host's event loop."""
    return redis.asyncio.Redis.from_url(url, **_options(socket_timeout))


def redacted(url: str) -> str:
    """``url`` without its password, for messages and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{location}"


def clock_offset(client: redis.Redis) -> tuple[float, float]:
    """Redis's clock (``TIME``) and its offset from ours, in seconds. The reading is taken as of the
    middle of the round trip: read after the reply, it would run late by the reply's way back, and
    every deadline a host derives from it with it."""
    before = time.time()
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    return now, now - (before + time.time()) / 2


def server_after_outage(client: redis.Redis, until: float, stopped: Callable[[], bool]) -> str | None:
    """After a connection failed: the ``run_id`` of the Redis that answers at ``client``'s URL, polled every
    50 ms until ``until`` (a ``time.monotonic()`` value) or ``stopped()``; None if none answered by then.
    A caller compares it with the id it saw before: the same server kept its streams, another lost them."""
    pause = threading.Event()
    while not stopped():
        try:
            return str(client.info("server")["run_id"])
        except OUTAGE:
            if time.monotonic() >= until:
                return None
        pause.wait(0.05)  # pacing the polls, not synchronisation
    return None
