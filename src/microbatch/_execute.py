"""Running one batch safely: the output checks, bounded bisection (:mod:`._isolate`), an error copy per caller.

:func:`run_batch` is a generator shared by the sync and async workers: it yields each list of items
to call ``fn`` on and receives that call's :data:`Outcome`, so it never knows how ``fn`` is called.
It decides nothing about callers itself: it reports runs, results and failures to its
:class:`Outcomes` (the batcher), the one place where each caller's outcome is decided.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Generator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from ._errors import BadBatchOutput, BatchSizeMismatch, MicrobatchError
from ._isolate import BatchErrors, Bisection, Verdict
from ._queue import Slice

__all__ = ["Outcome", "Outcomes", "check_output", "clone", "run_batch"]

logger = logging.getLogger("microbatch")

# What the worker reports for one call of the batch function: (ok, output or exception, seconds).
Outcome = tuple[bool, Any, float]


class Outcomes(Protocol):
    """What running a batch reports to. Each method takes the batcher's lock itself."""

    name: str
    batch_errors: BatchErrors

    def _live(self, part: list[Slice]) -> list[Slice]:
        """The slices of ``part`` still worth running (resolving any whose deadline has passed)."""

    def _ran(self, n: int, seconds: float) -> None:
        """One call of ``fn`` on ``n`` items took ``seconds``, whatever its outcome."""

    def _complete(self, part: list[Slice], values: list[Any], seconds: float) -> None:
        """``part`` ran and ``values`` holds one checked output per item, in order."""

    def _fail(self, part: list[Slice], exc: BaseException) -> None:
        """Every caller in ``part`` gets ``exc`` (each its own copy)."""

    def _batch_done(self, batch: list[Slice], verdict: Verdict, retries: int) -> None:
        """Nothing of ``batch`` is running any more: how it went, and the calls of ``fn`` beyond its first."""


def run_batch(batch: list[Slice], outcomes: Outcomes, isolate: bool) -> Generator[list[Any], Outcome, None]:
    """Run one batch: yields the item lists to call ``fn`` on, receives each call's outcome.

    With ``isolate``, a failed part is bisected under the bound of :mod:`._isolate`; nothing here may
    escape, so every request of the batch is resolved whatever ``fn`` or its output does.
    """
    plan = Bisection(batch, isolate, outcomes.batch_errors)
    try:
        while (planned := plan.next_part()) is not None:
            part = outcomes._live(planned)
            if not part:
                continue
            items = [item for request, start, stop in part for item in request.items[start:stop]]
            ok, value, seconds = yield items
            plan.ran()
            outcomes._ran(len(items), seconds)
            if ok:
                values = check_output(value, len(items), outcomes.name)
                if isinstance(values, list):
                    plan.succeeded()
                    outcomes._complete(part, values, seconds)
                else:
                    plan.output_failed()
                    outcomes._fail(part, values)
            elif not isinstance(value, Exception):
                plan.output_failed()  # KeyboardInterrupt and the like say nothing about the items: no bisection
                outcomes._fail(part, as_exception(value))
            else:
                for failing, exc in plan.failed(part, value):
                    outcomes._fail(failing, exc)
    except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
        logger.exception("microbatch: internal error in batcher %r; failing the batch", outcomes.name)
        outcomes._fail(batch, MicrobatchError(f"internal error in batcher {outcomes.name!r}: {exc!r}"))
    finally:
        outcomes._batch_done(batch, plan.verdict, max(0, plan.calls - 1))


_PER_ITEM_HINT = ". It looks like a function of one item: it must take a list of items and return a list of outputs"


def check_output(output: Any, n: int, name: str) -> list[Any] | BaseException:
    """The ``n`` outputs of a batch as a list, or the error every caller of the batch must see."""
    if inspect.iscoroutine(output):
        output.close()
        return TypeError(
            f"the batch function of {name!r} returned a coroutine: pass the async function itself "
            "(an `async def`), not a sync wrapper around it"
        )
    problem = None if type(output) is list or type(output) is tuple else _unusable(output)
    if problem is not None:
        return _bad_output(name, n, output, problem)
    try:
        if not hasattr(output, "__len__") or not hasattr(output, "__getitem__"):
            output = list(output)  # an iterator or generator: its order is the input order
        try:
            got = len(output)
        except TypeError:  # a 0-d array or tensor: a scalar in disguise
            return _bad_output(name, n, output, f" (a scalar, without a length){_PER_ITEM_HINT}")
        if got != n:
            return BatchSizeMismatch(n, got)
        return [output[i] for i in range(got)]
    except Exception as exc:
        # A user-defined __len__, __getitem__ or iterator raised: every caller of the batch sees it.
        return exc


def _unusable(output: Any) -> str | None:
    """Why an output can never be one output per input (the end of the error message), or None."""
    if output is None:
        return ". Does it lack a return statement?"
    if isinstance(output, (str, bytes, bytearray)):
        return _PER_ITEM_HINT
    if isinstance(output, Mapping):
        return " (keyed, not ordered by position): return a list of its values in input order"
    if isinstance(output, AbstractSet):
        return " (it has no order): return a list"
    if not hasattr(output, "__iter__") and not hasattr(output, "__len__"):
        return _PER_ITEM_HINT  # a number, or a numpy scalar (which has __getitem__ but no items)
    return None


def _bad_output(name: str, n: int, output: Any, problem: str) -> BadBatchOutput:
    kind = "None" if output is None else type(output).__name__
    return BadBatchOutput(
        f"the batch function of {name!r} must return one output per input, in input order, as an indexable "
        f"sequence (a list, tuple or array); for a batch of {n} input{'s' if n != 1 else ''} it returned "
        f"{kind}{problem}"
    )


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
