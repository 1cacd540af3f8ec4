"""An ambient deadline that every batcher call inside a block honours, whatever batcher it uses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ambient", "deadline", "remaining"]

_deadline: ContextVar[float | None] = ContextVar("microbatch_deadline", default=None)

#: The ambient deadline (a ``time.monotonic()`` instant) or None: a C call, for the calls' hot path.
ambient = _deadline.get


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, every batcher call times out at most ``seconds`` from now.

    A web adapter wraps a request in it (``X-Request-Timeout``) so that every model call the request
    makes shares one budget. Nested blocks keep the earlier deadline; a per-call ``timeout`` applies
    on top. ``None`` adds no limit. Context variables follow ``await`` and ``asyncio`` tasks, and are
    copied into threads by ``asyncio.to_thread``/``run_in_executor`` helpers that copy the context.
    """
    if seconds is None:
        yield
        return
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"deadline needs a number of seconds >= 0 or None, got {seconds!r}")
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(outer, at))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(timeout: float | None) -> float | None:
    """The effective timeout of a call: the smaller of ``timeout`` and the ambient deadline's rest."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    return left if timeout is None else min(timeout, left)
