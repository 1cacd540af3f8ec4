"""Running one batch safely: the output checks, bisection to the failing items, and an error copy per caller.

:func:`run_batch` is a generator shared by the sync and async workers: it yields each list of items
to call ``fn`` on and receives that call's :data:`Outcome`, so it never knows how ``fn`` is called.
It decides nothing about callers itself: it reports runs, results and failures to its
:class:`Outcomes` (the batcher), the one place where each caller's outcome is decided.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Generator
from typing import Any, Protocol

from ._errors import BatchSizeMismatch, MicrobatchError
from ._queue import Slice

__all__ = ["Outcome", "Outcomes", "check_output", "clone", "run_batch"]

logger = logging.getLogger("microbatch")

# What the worker reports for one call of the batch function: (ok, output or exception, seconds).
Outcome = tuple[bool, Any, float]


class Outcomes(Protocol):
    """What running a batch reports to. Each method takes the batcher's lock itself."""

    name: str

    def _live(self, part: list[Slice]) -> list[Slice]:
        """The slices of ``part`` still worth running (resolving any whose deadline has passed)."""

    def _ran(self, n: int, seconds: float) -> None:
        """One call of ``fn`` on ``n`` items took ``seconds``, whatever its outcome."""

    def _complete(self, part: list[Slice], values: list[Any], seconds: float) -> None:
        """``part`` ran and ``values`` holds one checked output per item, in order."""

    def _fail(self, part: list[Slice], exc: BaseException) -> None:
        """Every caller in ``part`` gets ``exc`` (each its own copy)."""

    def _batch_done(self, batch: list[Slice]) -> None:
        """Nothing of ``batch`` is running any more."""


def run_batch(batch: list[Slice], outcomes: Outcomes, isolate: bool) -> Generator[list[Any], Outcome, None]:
    """Run one batch: yields the item lists to call ``fn`` on, receives each call's outcome.

    With ``isolate``, a failed part is split in halves and each half retried until the failing items
    are alone; nothing here may escape, so every request of the batch is resolved whatever ``fn`` or
    its output does.
    """
    parts = [batch]
    try:
        while parts:
            part = outcomes._live(parts.pop())
            if not part:
                continue
            items = [item for request, start, stop in part for item in request.items[start:stop]]
            ok, value, seconds = yield items
            outcomes._ran(len(items), seconds)
            if ok:
                values = check_output(value, len(items), outcomes.name)
                if isinstance(values, list):
                    outcomes._complete(part, values, seconds)
                else:
                    outcomes._fail(part, values)
            elif isolate and len(items) > 1 and isinstance(value, Exception):
                first, second = split(part, len(items) // 2)
                parts.append(second)
                parts.append(first)
            else:
                outcomes._fail(part, as_exception(value))
    except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
        logger.exception("microbatch: internal error in batcher %r; failing the batch", outcomes.name)
        for rest in [batch, *parts]:
            outcomes._fail(rest, MicrobatchError(f"internal error in batcher {outcomes.name!r}: {exc!r}"))
    finally:
        outcomes._batch_done(batch)


def check_output(output: Any, n: int, name: str) -> list[Any] | BaseException:
    """The ``n`` outputs of a batch as a list, or the error every caller of the batch must see."""
    if inspect.iscoroutine(output):
        output.close()
        return TypeError(
            f"the batch function of {name!r} returned a coroutine: pass the async function itself "
            "(an `async def`), not a sync wrapper around it"
        )
    try:
        if not hasattr(output, "__len__") or not hasattr(output, "__getitem__"):
            output = list(output)
        got = len(output)
        if got != n:
            return BatchSizeMismatch(n, got)
        return [output[i] for i in range(got)]
    except Exception as exc:
        # A user-defined __len__, __getitem__ or iterator raised: every caller of the batch sees it.
        return exc


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


def as_exception(value: BaseException) -> BaseException:
    """What callers see for ``fn``'s failure: the exception itself, unless it would unwind their loop."""
    if isinstance(value, Exception):
        return value
    # KeyboardInterrupt, SystemExit... raised by fn must not unwind a caller's event loop.
    error = MicrobatchError(f"the batch function raised {value!r}")
    error.__cause__ = value
    return error


def clone(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more caller, or ``exc`` itself when no faithful copy can be made.

    copy.copy (``__reduce__``) knows the fields built-in exceptions keep outside ``args``, but it
    re-runs a Python ``__init__`` on the formatted args; rebuilding without ``__init__`` avoids that.
    A copy counts only if it has the same type, args and message.
    """
    cls = type(exc)
    expected = str(exc)
    for make in (copy.copy, _rebuild):
        try:
            duplicate = make(exc)
            if type(duplicate) is cls and duplicate.args == exc.args and str(duplicate) == expected:
                duplicate.__cause__ = exc.__cause__
                duplicate.__context__ = exc.__context__
                duplicate.__suppress_context__ = exc.__suppress_context__
                return duplicate.with_traceback(exc.__traceback__)
        except Exception:  # noqa: S112 - a copy that cannot be made just falls back to the original
            continue
    return exc


def _rebuild(exc: BaseException) -> BaseException:
    duplicate = type(exc).__new__(type(exc), *exc.args)
    duplicate.__dict__.update(exc.__dict__)
    duplicate.args = exc.args
    return duplicate
