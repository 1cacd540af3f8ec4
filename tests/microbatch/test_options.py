"""The option schema (``microbatch._options``) is the one list of options: Batcher's signature, its
attributes and defaults, BatcherOptions, the docstring and per-instance batchers all agree with it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from microbatch import Batcher, BatcherOptions, batch
from microbatch._options import OPTIONS, PlainOptions


def echo(items: list[Any]) -> list[Any]:
    return items


def test_the_typed_options_list_exactly_the_schema() -> None:
    assert BatcherOptions.__optional_keys__ == frozenset(OPTIONS)
    assert PlainOptions.__optional_keys__ == frozenset(OPTIONS) - {"collate"}


def test_batchers_signature_shows_every_option_keyword_only_with_its_default() -> None:
    parameters = inspect.signature(Batcher).parameters
    assert list(parameters) == ["fn", *OPTIONS]
    for name, option in OPTIONS.items():
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == option.default


def test_every_option_is_an_attribute_holding_its_default_or_the_given_value() -> None:
    with Batcher(echo) as b:
        assert {name: getattr(b, name) for name in OPTIONS} == {
            **{name: option.default for name, option in OPTIONS.items()}, "name": "echo"
        }
    given: PlainOptions = {"max_batch_size": 4, "max_wait_ms": 1.5, "small_request_size": 0, "max_queue_size": 8,
                             "on_error": "fail_batch", "name": "given", "aging_ms": 0, "max_batch_tokens": 64,
                             "group_by_length": False, "timeout": 2.0}
    with Batcher(echo, **given) as b:
        assert {name: getattr(b, name) for name in given} == given


def test_an_unknown_option_is_a_type_error_listing_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'max_batch'; valid: 'max_batch_size', "):
        Batcher(echo, max_batch=4)  # type: ignore[call-overload]


def test_the_docstring_documents_every_option() -> None:
    doc = inspect.getdoc(Batcher) or ""
    assert all(f"``{name}`` (default ``{option.default!r}``): {option.doc}" in doc for name, option in OPTIONS.items())


def test_a_method_batcher_passes_every_option_on_to_each_instances_batcher() -> None:
    class Model:
        @batch(max_batch_size=4, max_batch_tokens=64, group_by_length=False, timeout=2.0, on_error="fail_batch")
        def run(self, items: list[Any]) -> list[Any]:
            return items

    shared, model = Model.__dict__["run"], Model()
    with model.run as bound:
        assert bound is not shared
        assert {name: getattr(bound, name) for name in OPTIONS if name != "name"} == {
            name: getattr(shared, name) for name in OPTIONS if name != "name"
        }
        assert bound([1]) == [1]
