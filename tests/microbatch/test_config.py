"""Constructor arguments: a mistake raises ValueError or TypeError at once, with a message that
names the argument and what it must be; valid edge values are accepted."""

from __future__ import annotations

import math
from typing import Any

import pytest

from microbatch import Batcher


def echo(items: list[Any]) -> list[Any]:
    return items


def bad(option: str, value: Any, named: str) -> Any:
    return pytest.param({option: value}, named, id=f"{option}={value!r}")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        bad("max_batch_size", 0, r"max_batch_size must be an integer >= 1, got 0"),
        bad("max_batch_size", -3, r"max_batch_size.*>= 1"),
        bad("max_batch_size", 1.5, r"max_batch_size.*integer"),
        bad("max_batch_size", True, r"max_batch_size.*integer"),
        bad("max_batch_size", "32", r"max_batch_size.*integer"),
        bad("small_request_size", -1, r"small_request_size.*>= 0"),
        bad("max_queue_size", 0, r"max_queue_size.*>= 1"),
        bad("max_wait_ms", -1, r"max_wait_ms.*>= 0"),
        bad("max_wait_ms", math.nan, r"max_wait_ms"),
        bad("max_wait_ms", "5", r"max_wait_ms.*milliseconds"),
        bad("max_wait_ms", True, r"max_wait_ms"),
        bad("aging_ms", -0.5, r"aging_ms.*>= 0"),
        bad("aging_ms", math.nan, r"aging_ms"),
        bad("on_error", "ignore", r"on_error must be 'isolate' or 'fail_batch', got 'ignore'"),
        bad("on_error", None, r"on_error"),
        bad("timeout", 0, r"timeout.*> 0"),
        bad("timeout", -1.0, r"timeout"),
        bad("timeout", math.nan, r"timeout"),
        bad("timeout", math.inf, r"timeout"),
        bad("timeout", "5", r"timeout"),
    ],
)
def test_a_bad_option_is_refused_by_the_constructor_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises((ValueError, TypeError), match=named):
        Batcher(echo, **options)


def test_a_queue_smaller_than_one_batch_is_refused_saying_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"max_queue_size \(8\).*max_batch_size \(32\).*raise max_queue_size"):
        Batcher(echo, max_batch_size=32, max_queue_size=8)


@pytest.mark.parametrize("fn", [None, 42, "embed", [echo, "embed"]], ids=["None", "int", "str", "list"])
def test_a_batch_function_that_is_not_callable_is_a_type_error(fn: Any) -> None:
    with pytest.raises(TypeError, match="callable"):
        Batcher(fn)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Batcher(echo, 8)  # type: ignore[call-overload]


def test_edge_values_are_accepted_and_kept() -> None:
    b = Batcher(echo, max_batch_size=1, max_queue_size=1, max_wait_ms=0, small_request_size=0, aging_ms=0)
    with b:
        assert (b.max_batch_size, b.max_queue_size, b.max_wait_ms, b.small_request_size, b.aging_ms) == (1, 1, 0, 0, 0)
        assert b(1) == 1
        assert b.map([2]) == [2]
    defaults = Batcher(echo)
    assert (defaults.max_batch_size, defaults.max_wait_ms, defaults.small_request_size) == (32, None, 4)
    assert (defaults.max_queue_size, defaults.on_error, defaults.aging_ms) == (10_000, "isolate", None)
    defaults.close()
