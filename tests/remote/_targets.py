"""Batch functions the test hosts serve (``microbatch serve tests.remote._targets:NAME``).

Each records the batches it runs in the Redis list ``ran:<function>`` (Redis from ``MB_TEST_REDIS``),
so a test reads what reached the model from Redis, across processes. ``gated`` then blocks until the
test pushes a token to ``gate``: the cross-process twin of the engine tests' Gate.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

_redis: redis.Redis | None = None


def _r() -> redis.Redis:
    global _redis
    if _redis is None:
        # No socket timeout (redis-py's default is 5 s): gated's BLPOP is bounded by its own 60 s.
        _redis = redis.Redis.from_url(os.environ["MB_TEST_REDIS"], socket_timeout=None)
    return _redis


def _record(fn: str, items: list[Any]) -> None:
    _r().rpush(f"ran:{fn}", json.dumps(items))


def echo(items: list[Any]) -> list[Any]:
    """Each item back, with the host's pid: ``[item, pid]``."""
    return [[item, os.getpid()] for item in items]


def slow_echo(items: list[Any]) -> list[Any]:
    """As :func:`echo`, taking 20 ms a batch like a small model (model time, not synchronisation)."""
    time.sleep(0.02)
    return [[item, os.getpid()] for item in items]


def paced_echo(items: list[Any]) -> list[Any]:
    """As :func:`echo`; a batch holding an item that starts with ``"slow"`` takes 20 ms (model time), the
    others end at once: a test sets the host's run-time median by what it sends, then sends quick batches."""
    if any(isinstance(item, str) and item.startswith("slow") for item in items):
        time.sleep(0.02)
    return [[item, os.getpid()] for item in items]


def recorded(items: list[Any]) -> list[Any]:
    """Each item back, after recording the batch."""
    _record("recorded", items)
    return list(items)


def gated(items: list[Any]) -> list[Any]:
    """Record the batch, then wait for one token on the ``gate`` list."""
    _record("gated", items)
    if _r().blpop(["gate"], timeout=60) is None:
        raise RuntimeError("the test never opened the gate")
    return list(items)


def fails_on_boom(items: list[Any]) -> list[str]:
    """Upper-case each item; raises ValueError for a batch holding "boom" (isolation finds it)."""
    if "boom" in items:
        raise ValueError("cannot embed 'boom'")
    return [item.upper() for item in items]


def wrong_count(items: list[Any]) -> list[Any]:
    """Returns one output too few: the host's Batcher raises BatchSizeMismatch."""
    return list(items)[1:]
