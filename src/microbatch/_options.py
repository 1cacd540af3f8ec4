"""The option schema: each Batcher option's name, type, default, check and one-line doc, in one place.

:class:`~microbatch.Batcher`, :func:`~microbatch.batch`, :class:`BatcherOptions`, Flask's
``MICROBATCH_*`` config keys and Django's ``settings.MICROBATCH`` entries all derive from it, and a
test checks that they agree. Adding an option means adding its type to :class:`PlainOptions` (or
:class:`BatcherOptions`), its entry to :data:`OPTIONS` (with a check from :mod:`._checks`), and its
line to the README; the engine then reads it from the resolved options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from . import _checks as checks
from ._collate import Collate

__all__ = [
    "OPTIONS", "BatcherOptions", "OnError", "Option", "PlainOptions", "check_call_timeout", "check_option", "resolve",
    "signature", "unknown_options",
]

OnError = Literal["isolate", "fail_batch"]


class PlainOptions(TypedDict, total=False):
    """Every option but ``collate`` (Batcher's overloads type ``fn`` by whether a collate is given)."""

    max_batch_size: int
    max_wait_ms: float | None
    small_request_size: int
    max_queue_size: int
    on_error: OnError
    name: str | None
    aging_ms: float | None
    max_batch_tokens: int | None
    group_by_length: bool
    timeout: float | None
    on_worker_start: Callable[[], object] | None
    max_queue_delay_ms: float | None
    batch_errors: type[BaseException] | tuple[type[BaseException], ...]
    breaker_threshold: int | None
    breaker_open_ms: float
    group_by: Callable[[Any], Hashable] | None
    size_of: Callable[[Any], int] | None
    max_concurrent_batches: int
    coalesce: bool | Callable[[Any], Hashable]


class BatcherOptions(PlainOptions, total=False):
    """The keyword arguments of :class:`Batcher` (and :func:`batch`), for typed pass-through."""

    collate: Collate | None


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its default, its check (raises TypeError/ValueError naming it), and its doc line.

    ``app_wide`` options make sense as one value for every batcher of an app (Flask's config keys);
    ``name`` and ``collate`` belong to one batch function.
    """

    name: str
    default: Any
    check: Callable[[str, Any], None]
    doc: str
    app_wide: bool = True

    @property
    def config_key(self) -> str:
        """The Flask app config key that sets it app-wide: ``MICROBATCH_`` and the name in capitals."""
        return "MICROBATCH_" + self.name.upper()


OPTIONS: Mapping[str, Option] = {
    option.name: option
    for option in (
        Option("max_batch_size", 32, checks.integer(1), "most items passed to one call of fn"),
        Option("max_wait_ms", None, checks.milliseconds,
               "None adapts (waits only when the measured cost model says it pays), 0 never waits, a positive "
               "value waits up to that long after the oldest queued item arrived"),
        Option("small_request_size", 4, checks.integer(0),
               "requests of at most this many items go ahead of larger ones"),
        Option("max_queue_size", 10_000, checks.integer(1),
               "most items that may wait; beyond it calls raise Overloaded"),
        Option("on_error", "isolate", checks.on_error,
               "'isolate' finds the failing items by bisection; 'fail_batch' fails the whole batch"),
        Option("name", None, checks.text, "the batcher's name in stats, logs and its thread's name (default: fn's)",
               app_wide=False),
        Option("aging_ms", None, checks.milliseconds,
               "how long a large request yields to small ones; None is 16 full-batch run times"),
        Option("collate", None, checks.collate,
               "a Collate that builds fn's input from the items and splits its output back", app_wide=False),
        Option("max_batch_tokens", None, checks.integer(1, optional=True),
               "the most longest-item x items one batch may hold (item sizes: collate.size, else len(item))"),
        Option("group_by_length", True, checks.flag, "when length-aware, fill each batch with items of similar length"),
        Option("timeout", None, checks.seconds, "default timeout in seconds of calls that pass none (None: no limit)"),
        Option("on_worker_start", None, checks.hook,
               "called with no arguments on the worker thread before its first batch (per-thread runtime "
               "setup such as torch.set_num_threads); if it raises, the error is logged and the worker serves",
               app_wide=False),
        Option("max_queue_delay_ms", None, checks.milliseconds,
               "refuse a call with Overloaded when the cost model predicts it would wait longer than this "
               "before its batch starts (None: off)"),
        Option("batch_errors", (), checks.exception_types,
               "exception types that mean the whole batch failed (a model or backend fault): never bisected, "
               "they fail every call of the batch and count towards the circuit breaker"),
        Option("breaker_threshold", 5, checks.integer(1, optional=True),
               "batch-wide failures in a row that open the circuit breaker (calls then raise CircuitOpen); "
               "None turns the breaker off"),
        Option("breaker_open_ms", 1000.0, checks.positive_milliseconds,
               "how long the breaker first stays open before a probe batch; each failed probe doubles it, "
               "up to 32 times this"),
        Option("group_by", None, checks.key_function,
               "a function of an item returning its group key (hashable): a batch only holds items with equal "
               "keys (settings that must be the same for the whole batch); called on the caller's thread",
               app_wide=False),
        Option("size_of", None, checks.size_function,
               "a function of an item returning its length in tokens, for max_batch_tokens and length grouping "
               "(default: collate.size with a collate, else len(item)); called on the caller's thread",
               app_wide=False),
        Option("max_concurrent_batches", 1, checks.integer(1),
               "batches each replica of fn runs at once: an async fn on its event loop, a sync fn on that many "
               "worker threads (so it must be thread-safe)", app_wide=False),
        Option("coalesce", False, checks.coalesce,
               "True (or a function giving each item's key) computes identical items queued or running at the "
               "same time once; each caller gets its own copy of the result"),
    )
}

_drift = set(OPTIONS) ^ BatcherOptions.__optional_keys__
if _drift:  # the two halves of the schema must list the same names
    raise ImportError(f"microbatch's option schema is out of step: {sorted(_drift)} in only one of its two halves")


def unknown_options(names: Iterable[str]) -> list[str]:
    """The names that are not options, in the order given."""
    return [name for name in names if name not in OPTIONS]


def check_call_timeout(value: Any) -> None:
    """Check a per-call ``timeout=`` by the rules of the ``timeout`` option, saying so in the message."""
    try:
        OPTIONS["timeout"].check("timeout", value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"{exc} (per call as for the Batcher option; for a budget shared by several calls use "
            "microbatch.deadline())"
        ) from None


def check_option(name: str, value: Any) -> None:
    """Check one option's value alone; raises TypeError or ValueError naming it and what it must be."""
    OPTIONS[name].check(name, value)


def resolve(options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value (given, else default), each checked and the set checked as a whole."""
    unknown = unknown_options(options)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(map(repr, OPTIONS))}"
        )
    values = {name: options.get(name, option.default) for name, option in OPTIONS.items()}
    for name, option in OPTIONS.items():
        option.check(name, values[name])
    if values["max_queue_size"] < values["max_batch_size"]:
        raise ValueError(
            f"max_queue_size ({values['max_queue_size']}) must be at least max_batch_size "
            f"({values['max_batch_size']}): raise max_queue_size or lower max_batch_size"
        )
    return values


def signature(*positional: str) -> inspect.Signature:
    """``(<positional>, *, <every option>=<default>)``: what ``inspect.signature(Batcher)`` shows."""
    leading = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in positional]
    hints = BatcherOptions.__annotations__
    keywords = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
            annotation=getattr(hints[name], "__forward_arg__", hints[name]),
        )
        for name, option in OPTIONS.items()
    ]
    return inspect.Signature([*leading, *keywords])
