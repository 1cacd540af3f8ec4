"""The option value checks: each raises TypeError or ValueError naming the option and what it must be.

The schema (:mod:`._options`) pairs every option with one of these; each takes the option's name and
the value given, and returns nothing when the value is acceptable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._collate import Collate

__all__ = [
    "coalesce", "collate", "exception_types", "flag", "hook", "integer", "key_function", "milliseconds", "on_error",
    "positive_milliseconds", "seconds", "size_function", "text",
]


def integer(minimum: int, *, optional: bool = False) -> Callable[[str, Any], None]:
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


def milliseconds(name: str, value: Any) -> None:
    if value is None:
        return
    _number(name, value, "milliseconds")
    # Infinity is refused too: a wait or a yield that never ends leaves a lone call queued for good.
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be None or a finite number of milliseconds >= 0, got {value!r}")


def seconds(name: str, value: Any) -> None:
    if value is None:
        return
    _number(name, value, "seconds")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be None or a number of seconds > 0, got {value!r} (finite: None means no limit)")


def on_error(name: str, value: Any) -> None:
    if value not in ("isolate", "fail_batch"):
        raise ValueError(f"{name} must be 'isolate' or 'fail_batch', got {value!r}")


def flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def text(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be None or a string, got {value!r}")


def hook(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function taking no arguments (or None), got {type(value).__name__}")


def coalesce(name: str, value: Any) -> None:
    if not isinstance(value, bool) and not callable(value):
        raise TypeError(f"{name} must be True, False or a function returning an item's key, got {value!r}")


def exception_types(name: str, value: Any) -> None:
    classes = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise TypeError(
            f"{name} must be an exception class or a tuple of them, like (TimeoutError, ConnectionError), got {value!r}"
        )


def positive_milliseconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a number of milliseconds > 0, got {value!r}")


def key_function(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a function of one item returning its group key (or None), got {type(value).__name__}; "
            "for example operator.itemgetter('language')"
        )


def size_function(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a function of one item returning its length in tokens (or None), "
            f"got {type(value).__name__}; for example lambda item: len(item['input_ids'])"
        )


def collate(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Collate):
        raise TypeError(
            f"{name} must have size(item), collate(items) and split(output, items) methods, got {value!r}; "
            "see microbatch.tensors.PadCollate"
        )
