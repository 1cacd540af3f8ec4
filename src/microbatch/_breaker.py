"""The circuit breaker: after a run of batch-wide failures, refuse calls for a growing interval, then probe.

States: ``closed`` (calls are admitted), ``open`` (calls raise :class:`~microbatch.CircuitOpen` at
once, until the open interval ends), ``half_open`` (one batch's worth of calls is admitted as a
probe; the rest are refused until a batch ends). Transitions, on each batch's verdict
(:mod:`._isolate`):

* ``breaker_threshold`` batch-wide failures in a row, with no successful call of ``fn`` in between,
  open it for ``breaker_open_ms``; the batcher then fails the queued calls at once, since they would
  meet the same fault.
* In ``half_open`` a batch that succeeds anywhere closes it; a batch-wide failure opens it again for
  twice the last interval, at most ``2**MAX_DOUBLINGS`` times ``breaker_open_ms``; a batch of only
  isolated failures (one bad input) or of nothing run leaves it half-open, ready for another probe.

The breaker is kept under the batcher's lock and reads time from the ``now`` it is given
(``_clock.now()``), so tests drive it with a controllable clock.
"""

from __future__ import annotations

from typing import Literal

from ._errors import CircuitOpen
from ._isolate import Verdict

__all__ = ["MAX_DOUBLINGS", "Breaker", "BreakerState"]

MAX_DOUBLINGS = 5  # the open interval grows to at most 32 times breaker_open_ms (32 s by default)

BreakerState = Literal["closed", "open", "half_open"]


class Breaker:
    """One batcher's circuit breaker. ``threshold`` None turns it off (it then stays closed)."""

    __slots__ = ("threshold", "first_interval", "_state", "failures", "interval", "reopen_at", "opened")

    def __init__(self, threshold: int | None, open_seconds: float) -> None:
        self.threshold = threshold
        self.first_interval = open_seconds
        self._state: BreakerState = "closed"
        self.failures = 0  # batch-wide failures in a row
        self.interval = open_seconds  # how long the next (or current) opening lasts
        self.reopen_at = 0.0  # when an open breaker turns half-open
        self.opened = 0  # times it opened

    def __repr__(self) -> str:
        return f"<Breaker {self._state} failures={self.failures} interval={self.interval:.3g}s opened={self.opened}>"

    def state(self, now: float) -> BreakerState:
        if self._state == "open" and now >= self.reopen_at:
            self._state = "half_open"
        return self._state

    def report(self, now: float) -> tuple[BreakerState, int]:
        """The state and the times opened, for the batcher's stats."""
        return self.state(now), self.opened

    def refusal(self, now: float, name: str, n: int, in_flight: int, batch: int) -> CircuitOpen | None:
        """The error refusing a call of ``n`` items now, or None to admit it.

        ``in_flight`` items are queued or running; half-open admits a probe of up to ``batch`` items.
        """
        state = self.state(now)
        if state == "closed":
            return None
        if state == "half_open":
            if in_flight == 0 or in_flight + n <= batch:
                return None
            return CircuitOpen(
                f"batcher {name!r} is probing its batch function after batch-wide failures; "
                f"retry in {self.first_interval:.3g}s", retry_after=self.first_interval,
            )
        return self.open_error(now, name)

    def open_error(self, now: float, name: str) -> CircuitOpen:
        wait = max(self.reopen_at - now, 0.0)
        return CircuitOpen(
            f"batcher {name!r} refuses calls for {wait:.3g}s after {self.failures} batch-wide failures of its "
            f"batch function in a row (circuit breaker open); retry in {wait:.3g}s", retry_after=wait,
        )

    def ended(self, now: float, verdict: Verdict) -> bool:
        """Take a batch's verdict; True when it opens the breaker (the queued calls should fail now)."""
        if self.threshold is None:
            return False
        state = self.state(now)
        if verdict == "ok":
            self._state, self.failures, self.interval = "closed", 0, self.first_interval
            return False
        if verdict != "batch_wide" or state == "open":
            return False
        self.failures += 1
        if state == "half_open":
            self.interval = min(self.interval * 2, self.first_interval * 2**MAX_DOUBLINGS)
        elif self.failures < self.threshold:
            return False
        self._state = "open"
        self.reopen_at = now + self.interval
        self.opened += 1
        return True
