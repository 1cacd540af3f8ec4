"""Bounded bisection: which parts of a failed batch run again, and when a failure is taken as the batch's.

With ``on_error="isolate"`` a failed part is split in halves and the halves run again, level by level
(breadth first), so the parts failing at one level are disjoint and each holds at least one failing
item. The rule that bounds the storm an outage would cause (every item failing: 2n-1 calls) is:

* While at most :data:`ISOLATE_LIMIT` parts of a level fail, each failing part is split again, so a
  batch with up to that many failing items is isolated exactly: only their callers fail.
* At the first level where more than :data:`ISOLATE_LIMIT` parts fail, the batch has provably more
  failing items than that (or a batch-wide fault): splitting stops. The rest of that level still
  runs once; every failing part fails whole, each with its own exception.
* An exception of a type named in ``batch_errors`` is batch-wide at once: the part that raised it and
  every part not yet run fail with it, with no further call.

Cost, in calls of ``fn`` beyond the first, for a batch of ``n`` items: one bad item ``2·log2(n)``;
``k <= 3`` bad items at most ``Σ_{d=1..⌈log2 n⌉} 2·min(k, 2^(d-1))`` (``≤ 6·⌈log2 n⌉``); every
item failing (an outage) at most 6, whatever ``n``: the halves (2) and the quarters (4), which all
fail. A ``batch_errors`` exception costs none. Under ``on_error="fail_batch"`` nothing is split.

A batch's :data:`Verdict` feeds the circuit breaker: ``"ok"`` when any call succeeded (the model
works), ``"batch_wide"`` when splitting stopped at the limit, a ``batch_errors`` type was raised or,
under ``fail_batch``, ``fn`` raised at all; ``"failed"`` when only isolated items failed (one bad
input never counts against the model); ``"not_run"`` when nothing was called.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ._request import Slice

__all__ = ["ISOLATE_LIMIT", "BatchErrors", "Bisection", "Verdict", "split"]

ISOLATE_LIMIT = 3  # failing parts of one level that are still split: 3 bad items per batch are isolated exactly

Verdict = Literal["ok", "batch_wide", "failed", "not_run"]

Failure = tuple[list[Slice], BaseException]
# The batch_errors option: an exception class or a tuple of them (what isinstance takes).
BatchErrors = type[BaseException] | tuple[type[BaseException], ...]


class Bisection:
    """The parts of one batch still to run, level by level, and what the failure of one of them means.

    :meth:`next_part` gives the next part to call ``fn`` on (None: the batch is done); after the call,
    :meth:`succeeded` or :meth:`failed` says how it went, and :meth:`failed` returns the parts whose
    callers must get an exception now.
    """

    __slots__ = ("_isolate", "_batch_errors", "_level", "_failing", "_count", "_splitting", "calls", "_verdict")

    def __init__(self, batch: list[Slice], isolate: bool, batch_errors: BatchErrors) -> None:
        self._isolate = isolate
        self._batch_errors = batch_errors
        self._level: deque[list[Slice]] = deque([batch])  # parts of the current level not yet run
        self._failing: list[Failure] = []  # failing parts of the current level, to split when it ends
        self._count = 0  # parts of the current level that failed
        self._splitting = isolate
        self.calls = 0
        self._verdict: Verdict = "not_run"

    def __repr__(self) -> str:
        return (f"<Bisection calls={self.calls} level_left={len(self._level)} failing={self._count} "
                f"splitting={self._splitting} verdict={self._verdict}>")

    @property
    def verdict(self) -> Verdict:
        return self._verdict

    @property
    def finished(self) -> bool:
        """No part is left to run: the call just made was the batch's last."""
        return not self._level and not self._failing

    def next_part(self) -> list[Slice] | None:
        if not self._level and self._failing:
            # The level is over and few enough of its parts failed: the next level is their halves.
            for part, _ in self._failing:
                self._level.extend(split(part, _size(part) // 2))
            self._failing = []
            self._count = 0
        return self._level.popleft() if self._level else None

    def ran(self) -> None:
        self.calls += 1

    def succeeded(self) -> None:
        self._verdict = "ok"

    def output_failed(self) -> None:
        """The part fails whole without bisection: an unusable output, or a BaseException, says nothing about items."""
        self._settle("failed")

    def failed(self, part: list[Slice], exc: BaseException) -> list[Failure]:
        """``fn`` raised ``exc`` on ``part``: the parts to fail now, each with the exception its callers get."""
        if self._batch_errors and isinstance(exc, self._batch_errors):
            self._settle("batch_wide")
            self._splitting = False
            failures: list[Failure] = [(part, exc), *self._failing, *((rest, exc) for rest in self._level)]
            self._failing = []
            self._level.clear()
            return failures
        if not self._isolate:
            self._settle("batch_wide")  # fail_batch: the user takes every failure to be the batch's
            return [(part, exc)]
        self._count += 1
        if self._splitting and self._count > ISOLATE_LIMIT:
            self._splitting = False
            self._settle("batch_wide")
            failures = [*self._failing, (part, exc)]
            self._failing = []
            return failures
        self._settle("failed")
        if not self._splitting or _size(part) == 1:
            return [(part, exc)]
        self._failing.append((part, exc))
        return []

    def _settle(self, verdict: Verdict) -> None:
        # "ok" wins (the model works); "batch_wide" wins over "failed".
        if self._verdict == "ok" or (self._verdict == "batch_wide" and verdict == "failed"):
            return
        self._verdict = verdict


def _size(part: list[Slice]) -> int:
    return sum(stop - start for _, start, stop in part)


def split(part: list[Slice], at: int) -> tuple[list[Slice], list[Slice]]:
    """Split a batch's slices into the first ``at`` items and the rest."""
    first: list[Slice] = []
    second: list[Slice] = []
    seen = 0
    for request, start, stop in part:
        k = stop - start
        if seen + k <= at:
            first.append((request, start, stop))
        elif seen >= at:
            second.append((request, start, stop))
        else:
            cut = start + (at - seen)
            first.append((request, start, cut))
            second.append((request, cut, stop))
        seen += k
    return first, second
