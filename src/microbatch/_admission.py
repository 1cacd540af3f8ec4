"""Admission: a call's effective timeout, and whether the queue may take it (its size, the predicted wait).

Both run before a request is queued. A refusal is an :class:`~microbatch.Overloaded` whose
``retry_after`` comes from the same cost model that predicted the wait (``_policy``), so a client
told to come back is told when the queue will have drained enough to take it.
"""

from __future__ import annotations

import math
from typing import Any

from ._deadline import remaining
from ._errors import Overloaded
from ._options import check_call_timeout
from ._policy import WaitPolicy

__all__ = ["call_timeout", "refusal"]


def call_timeout(timeout: Any, default: float | None) -> float | None:
    """The effective timeout of a call: an explicit ``timeout`` (checked like the option), else the
    batcher's default, shortened by the ambient :func:`~microbatch.deadline`.

    A bool, a string, 0, a negative, NaN or infinite explicit timeout is a mistake and raises; an
    ambient deadline that has already passed is not, and gives a result <= 0 (no time left).
    """
    if timeout is not None and not (type(timeout) is float and 0 < timeout < math.inf):
        check_call_timeout(timeout)  # a plain positive finite float (the usual case) needs no more checking
    return remaining(default if timeout is None else timeout)


def refusal(
    policy: WaitPolicy, queued: int, running: int, n: int, max_queue_size: int, max_queue_delay_ms: float | None,
    name: str,
) -> Overloaded | None:
    """Why ``n`` more items may not join a queue of ``queued`` (``running`` items in the batch running), or None."""
    if queued + n > max_queue_size:
        retry_after = policy.retry_after(queued + n - max_queue_size)
        return Overloaded(
            f"batcher {name!r} has {queued} items queued (max_queue_size={max_queue_size}); "
            f"retry in {retry_after:.3g}s",
            retry_after=retry_after,
        )
    if max_queue_delay_ms is not None:
        predicted, bound = policy.queue_delay(queued, running, n), max_queue_delay_ms / 1000.0
        if predicted > bound:
            retry_after = policy.delay_retry_after(predicted, bound)
            return Overloaded(
                f"batcher {name!r} would start this call in about {predicted:.3g}s, more than its "
                f"max_queue_delay_ms={max_queue_delay_ms:g}; retry in {retry_after:.3g}s",
                retry_after=retry_after,
            )
    return None
