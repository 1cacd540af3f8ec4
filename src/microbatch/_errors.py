"""The exceptions microbatch raises: one base class and a leaf per condition."""

from __future__ import annotations

__all__ = [
    "BadBatchOutput",
    "BatchSizeMismatch",
    "ItemTooLarge",
    "BatcherClosed",
    "CircuitOpen",
    "DeadlineExceeded",
    "MicrobatchError",
    "Overloaded",
]


class MicrobatchError(Exception):
    """Base class of every error microbatch raises itself (the batch function's own errors pass through)."""


class Overloaded(MicrobatchError):
    """Raised when a call would push the queue past ``max_queue_size`` or wait past ``max_queue_delay_ms``.

    Nothing was enqueued. ``retry_after`` estimates, in seconds, how long until the call would be admitted.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_overloaded, (str(self), self.retry_after))


def _rebuild_overloaded(message: str, retry_after: float) -> Overloaded:
    return Overloaded(message, retry_after=retry_after)


class CircuitOpen(Overloaded):
    """Raised instead of running a call while the circuit breaker is open after batch-wide failures.

    Nothing was run or enqueued; ``retry_after`` is the time, in seconds, until the breaker lets a probe through.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_circuit_open, (str(self), self.retry_after))


def _rebuild_circuit_open(message: str, retry_after: float) -> CircuitOpen:
    return CircuitOpen(message, retry_after=retry_after)


class DeadlineExceeded(MicrobatchError, TimeoutError):
    """Raised when a call's timeout passes before its result is ready; an expired item never reaches the model."""


class BatcherClosed(MicrobatchError):
    """Raised when a call reaches a closed or closing batcher, or is dropped by ``close(drain=False)``."""


class BadBatchOutput(MicrobatchError, TypeError):
    """Raised to every caller of a batch whose function returned something other than one output per input."""


class BatchSizeMismatch(BadBatchOutput):
    """Raised to every caller of a batch whose function returned a different number of outputs than inputs."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(
            f"the batch function returned {got} outputs for a batch of {expected} inputs; "
            "it must return exactly one output per input, in input order"
        )
        self.expected = expected
        self.got = got

    def __reduce__(self) -> tuple[object, ...]:
        return (BatchSizeMismatch, (self.expected, self.got))


class ItemTooLarge(MicrobatchError, ValueError):
    """Raised at submission when one item alone exceeds ``max_batch_tokens``; it is never queued."""
