"""The option schema: each Batcher option's name, type, default, check and one-line doc, in one place.

:class:`~microbatch.Batcher`, :func:`~microbatch.batch`, :class:`BatcherOptions`, Flask's
``MICROBATCH_*`` config keys and Django's ``settings.MICROBATCH`` entries all derive from it, and a
test checks that they agree. Adding an option means adding its type to :class:`PlainOptions` (or
:class:`BatcherOptions`), its entry to :data:`OPTIONS`, and its line to the README; the engine then
reads it from the resolved options.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

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


def _integer(minimum: int, *, optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            prefix = "None or " if optional else ""
            raise ValueError(f"{name} must be {prefix}an integer >= {minimum}, got {value!r}")

    return check


def _number(name: str, value: Any, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be None or a number of {unit}, got {type(value).__name__} {value!r}")


def _milliseconds(name: str, value: Any) -> None:
    if value is None:
        return
    _number(name, value, "milliseconds")
    # Infinity is refused too: a wait or a yield that never ends leaves a lone call queued for good.
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be None or a finite number of milliseconds >= 0, got {value!r}")


def _seconds(name: str, value: Any) -> None:
    if value is None:
        return
    _number(name, value, "seconds")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be None or a number of seconds > 0, got {value!r} (finite: None means no limit)")


def _on_error(name: str, value: Any) -> None:
    if value not in ("isolate", "fail_batch"):
        raise ValueError(f"{name} must be 'isolate' or 'fail_batch', got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _text(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be None or a string, got {value!r}")


def _hook(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function taking no arguments (or None), got {type(value).__name__}")


def _coalesce(name: str, value: Any) -> None:
    if not isinstance(value, bool) and not callable(value):
        raise TypeError(f"{name} must be True, False or a function returning an item's key, got {value!r}")


def _exception_types(name: str, value: Any) -> None:
    classes = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise TypeError(
            f"{name} must be an exception class or a tuple of them, like (TimeoutError, ConnectionError), got {value!r}"
        )


def _positive_milliseconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a number of milliseconds > 0, got {value!r}")


def _key_function(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a function of one item returning its group key (or None), got {type(value).__name__}; "
            "for example operator.itemgetter('language')"
        )


def _size_function(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a function of one item returning its length in tokens (or None), "
            f"got {type(value).__name__}; for example lambda item: len(item['input_ids'])"
        )


def _collate(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Collate):
        raise TypeError(
            f"{name} must have size(item), collate(items) and split(output, items) methods, got {value!r}; "
            "see microbatch.tensors.PadCollate"
        )


OPTIONS: Mapping[str, Option] = {
    option.name: option
    for option in (
        Option("max_batch_size", 32, _integer(1), "most items passed to one call of fn"),
        Option("max_wait_ms", None, _milliseconds,
               "None adapts (waits only when the measured cost model says it pays), 0 never waits, a positive "
               "value waits up to that long after the oldest queued item arrived"),
        Option("small_request_size", 4, _integer(0), "requests of at most this many items go ahead of larger ones"),
        Option("max_queue_size", 10_000, _integer(1), "most items that may wait; beyond it calls raise Overloaded"),
        Option("on_error", "isolate", _on_error,
               "'isolate' finds the failing items by bisection; 'fail_batch' fails the whole batch"),
        Option("name", None, _text, "the batcher's name in stats, logs and its thread's name (default: fn's)",
               app_wide=False),
        Option("aging_ms", None, _milliseconds,
               "how long a large request yields to small ones; None is 16 full-batch run times"),
        Option("collate", None, _collate,
               "a Collate that builds fn's input from the items and splits its output back", app_wide=False),
        Option("max_batch_tokens", None, _integer(1, optional=True),
               "the most longest-item x items one batch may hold (item sizes: collate.size, else len(item))"),
        Option("group_by_length", True, _flag, "when length-aware, fill each batch with items of similar length"),
        Option("timeout", None, _seconds, "default timeout in seconds of calls that pass none (None: no limit)"),
        Option("on_worker_start", None, _hook,
               "called with no arguments on the worker thread before its first batch (per-thread runtime "
               "setup such as torch.set_num_threads); if it raises, the error is logged and the worker serves",
               app_wide=False),
        Option("max_queue_delay_ms", None, _milliseconds,
               "refuse a call with Overloaded when the cost model predicts it would wait longer than this "
               "before its batch starts (None: off)"),
        Option("batch_errors", (), _exception_types,
               "exception types that mean the whole batch failed (a model or backend fault): never bisected, "
               "they fail every call of the batch and count towards the circuit breaker"),
        Option("breaker_threshold", 5, _integer(1, optional=True),
               "batch-wide failures in a row that open the circuit breaker (calls then raise CircuitOpen); "
               "None turns the breaker off"),
        Option("breaker_open_ms", 1000.0, _positive_milliseconds,
               "how long the breaker first stays open before a probe batch; each failed probe doubles it, "
               "up to 32 times this"),
        Option("group_by", None, _key_function,
               "a function of an item returning its group key (hashable): a batch only holds items with equal "
               "keys (settings that must be the same for the whole batch); called on the caller's thread",
               app_wide=False),
        Option("size_of", None, _size_function,
               "a function of an item returning its length in tokens, for max_batch_tokens and length grouping "
               "(default: collate.size with a collate, else len(item)); called on the caller's thread",
               app_wide=False),
        Option("max_concurrent_batches", 1, _integer(1),
               "batches each replica of fn runs at once: an async fn on its event loop, a sync fn on that many "
               "worker threads (so it must be thread-safe)", app_wide=False),
        Option("coalesce", False, _coalesce,
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
