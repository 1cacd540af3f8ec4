"""How a load-test request ended: accepted, shed (the server asked the client to come back later) or failed.

A 503 carrying ``Retry-After`` (seconds) is the server shedding load, as the batched service does when
its queue is full or a request's predicted wait passes ``max_queue_delay_ms``: a well-behaved client
waits that long and asks again. It is neither throughput nor a failure, so the tables count it
apart. A 503 without ``Retry-After``, and every other error or failed check, is a failure.

One source for the Locust users (``locustfile.py``: which answers to back off from, and for how
long) and for the scripts that summarise their records (``compare.py``, ``overload.py``). It imports
nothing from Locust, so tests use it as it is.
"""

from __future__ import annotations

import math
from typing import Literal

Outcome = Literal["accepted", "shed", "failed"]
ACCEPTED: Outcome = "accepted"
SHED: Outcome = "shed"
FAILED: Outcome = "failed"


def retry_after(status: int, header: str | None) -> float | None:
    """The seconds a shed request's answer asks the client to wait: a 503's ``Retry-After``; None for any
    other answer, a 503 without the header, or one that is not a number of seconds >= 0 (the service
    never sends an HTTP date)."""
    if status != 503 or header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return seconds if 0 <= seconds < math.inf else None


def outcome(passed: bool, status: int, header: str | None) -> Outcome:
    """``ACCEPTED`` when the request passed its checks; else ``SHED`` when the answer was a 503 with a
    valid ``Retry-After`` (``header``), else ``FAILED``."""
    if passed:
        return ACCEPTED
    return SHED if retry_after(status, header) is not None else FAILED
