"""Batch functions of several parameters, one list each (``@batch_columns``): callers pass the parameters
themselves, by position or by name; a wrong call fails in the caller like calling the function would; a
tuple return is several outputs; everything a Batcher promises (batching, isolation, deadlines, priority,
token budgets) holds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from microbatch import (
    Batcher,
    BatchSizeMismatch,
    ColumnBatcher,
    DeadlineExceeded,
    ItemTooLarge,
    batch_columns,
)

from .conftest import Call, FakeClock, Gate, LoopThread

AnyColumns = ColumnBatcher[*tuple[Any, ...], Any]  # a column batcher of any parameters
Trim = tuple[AnyColumns, Gate]  # the trim fixture: a column batcher and the gate holding its function


def trimmed(rows: list[tuple[str, int]]) -> list[str]:
    """The reference: each (word, length) row trimmed; a negative length is a bad argument."""
    out = []
    for word, n in rows:
        if n < 0:
            raise ValueError(f"negative length {n}")
        out.append(word[:n])
    return out


@pytest.fixture
def make_columns() -> Iterator[Callable[..., AnyColumns]]:
    """``make_columns(fn, **options)``: a ColumnBatcher closed without draining at teardown."""
    made: list[AnyColumns] = []

    def make(fn: Callable[..., Any], **options: Any) -> AnyColumns:
        b: AnyColumns = ColumnBatcher(fn, **options)
        made.append(b)
        return b

    yield make
    closers = [threading.Thread(target=b.close, kwargs={"drain": False}, daemon=True) for b in made]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(0.5)


@pytest.fixture
def held_trim(make_gate: Callable[..., Gate], make_columns: Callable[..., AnyColumns], is_async: bool) -> Trim:
    """``(trim, gate)``: ``trim(words, lengths)`` held in a gate that records each batch as its rows."""
    gate = make_gate(process=trimmed, is_async=is_async)
    if is_async:

        async def run_async(words: list[str], lengths: list[int]) -> list[str]:
            return await gate(list(zip(words, lengths, strict=True)))  # type: ignore[no-any-return]

        fn: Callable[..., Any] = run_async
    else:

        def run(words: list[str], lengths: list[int]) -> list[str]:
            return gate(list(zip(words, lengths, strict=True)))  # type: ignore[no-any-return]

        fn = run
    return make_columns(fn, max_batch_size=8, name="trim"), gate


def hold_worker(b: AnyColumns, gate: Gate) -> Call:
    blocker = Call(b, "blocker", 1)
    gate.wait_blocked()
    return blocker


def test_calls_by_position_by_name_awaited_and_mapped_share_one_batch_and_each_get_their_own_output(
    held_trim: Trim, queued: Callable[..., None], loop_thread: LoopThread
) -> None:
    trim, gate = held_trim
    blocker = hold_worker(trim, gate)
    by_position = Call(trim, "hello", 3)
    queued(trim, 1)
    by_name = Call(trim, words="world", lengths=2)
    queued(trim, 2)
    awaited = loop_thread.start(trim.acall("python", 2))
    queued(trim, 3)
    mapped = Call(trim.map, [("abc", 1), ("defg", 2)])
    queued(trim, 5)
    gate.open()
    assert (blocker.result(), by_position.result(), by_name.result(), awaited.result(), mapped.result()) == (
        "b", "hel", "wo", "py", ["a", "de"]
    )
    assert gate.calls[1] == [("hello", 3), ("world", 2), ("python", 2), ("abc", 1), ("defg", 2)]


def test_a_call_with_wrong_arguments_raises_the_callers_type_error_and_queues_nothing(
    make_columns: Callable[..., AnyColumns],
) -> None:
    def trim(words: list[str], lengths: list[int]) -> list[str]:
        raise AssertionError("never called")

    b = make_columns(trim)
    wrong: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        (("hello",), {}, "missing a required argument: 'lengths'"),
        (("hello", 3, 4), {}, "too many positional arguments"),
        (("hello", 3), {"length": 3}, "got an unexpected keyword argument 'length'"),
        (("hello", 3), {"words": "x"}, "multiple values for argument 'words'"),
    ]
    for args, kwargs, message in wrong:
        with pytest.raises(TypeError, match=rf"^trim\(\): {message}"):
            b(*args, **kwargs)
    with pytest.raises(TypeError, match=r"trim.map\(\): row 1: trim\(\): missing a required argument"):
        b.map([("a", 1), ("b",)])
    with pytest.raises(TypeError, match=r"row 0 is a str; pass each call's arguments as a tuple"):
        b.map(["ab"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"takes an iterable of argument tuples, got a str"):
        b.map("ab")  # type: ignore[arg-type]
    assert (b.stats.submitted, b.stats.rejected, b.stats.batches) == (0, 0, 0)
    assert "idle" in repr(b)  # the worker never even started


def test_defaults_and_keyword_only_parameters_reach_the_function_as_lists(
    make_columns: Callable[..., AnyColumns],
) -> None:
    seen: list[tuple[list[str], list[str], list[bool]]] = []

    def translate(texts: list[str], *, lang: list[str], upper: list[bool] = False) -> list[str]:  # type: ignore[assignment]
        seen.append((texts, lang, upper))
        return [f"{code}:{t.upper() if up else t}" for t, code, up in zip(texts, lang, upper, strict=True)]

    b = make_columns(translate)
    assert b(texts="hi", lang="de") == "de:hi"
    assert b.map([{"texts": "yo", "lang": "fr", "upper": True}]) == ["fr:YO"]
    assert seen == [(["hi"], ["de"], [False]), (["yo"], ["fr"], [True])]


def test_a_tuple_return_is_several_outputs_and_each_caller_gets_its_tuple(
    make_columns: Callable[..., AnyColumns], loop_thread: LoopThread
) -> None:
    async def measure(words: list[str], lengths: list[int]) -> tuple[list[str], list[int]]:
        return [w[:n] for w, n in zip(words, lengths, strict=True)], [len(w) for w in words]

    b = make_columns(measure)
    assert b("hello", 3) == ("hel", 5)
    assert b.map([("hello", 3), ("hi", 1)]) == [("hel", 5), ("h", 2)]
    assert loop_thread.run(b.amap([("abc", 2)])) == [("ab", 3)]


def test_a_tuple_of_wrong_length_outputs_fails_the_whole_batch_with_batch_size_mismatch_once(
    make_columns: Callable[..., AnyColumns],
) -> None:
    calls: list[int] = []

    def short(words: list[str], lengths: list[int]) -> tuple[list[str], list[int]]:
        calls.append(len(words))
        return list(words), list(lengths)[:-1]

    b = make_columns(short)
    with pytest.raises(BatchSizeMismatch, match="returned 2 outputs for a batch of 3 inputs"):
        b.map([("a", 1), ("b", 2), ("c", 3)])
    assert calls == [3]  # not bisected: a function that miscounts fails its batch once


def test_a_tuple_of_per_item_strings_is_refused_with_the_fix(
    make_columns: Callable[..., AnyColumns],
) -> None:
    def as_tuple(words: list[str], lengths: list[int]) -> tuple[str, ...]:
        return tuple(w[:n] for w, n in zip(words, lengths, strict=True))

    b = make_columns(as_tuple)
    with pytest.raises(TypeError, match="returned a tuple, which means several outputs .* return a list for one"):
        b("ab", 2)


def test_a_bad_argument_fails_only_its_caller(held_trim: Trim, queued: Callable[..., None]) -> None:
    trim, gate = held_trim
    blocker = hold_worker(trim, gate)
    calls = [Call(trim, "hello", 3), Call(trim, "bad", -1), Call(trim, "world", 2)]
    queued(trim, 3)
    gate.open()
    assert blocker.result() == "b"
    assert calls[0].result() == "hel" and calls[2].result() == "wo"
    assert isinstance(calls[1].exception(), ValueError)


def test_a_call_past_its_deadline_expires_and_never_reaches_the_function(
    held_trim: Trim, queued: Callable[..., None], fake_clock: FakeClock
) -> None:
    trim, gate = held_trim
    blocker = hold_worker(trim, gate)
    late = Call(trim, "late", 2, timeout=60.0)
    on_time = Call(trim, words="soon", lengths=2)
    queued(trim, 2)
    fake_clock.advance(61.0)
    gate.open()
    assert blocker.result() == "b" and on_time.result() == "so"
    assert isinstance(late.exception(), DeadlineExceeded)
    assert ("late", 2) not in gate.items


def test_a_small_call_goes_ahead_of_a_large_map(held_trim: Trim, queued: Callable[..., None]) -> None:
    trim, gate = held_trim
    blocker = hold_worker(trim, gate)
    large = Call(trim.map, [(f"w{i}", 1) for i in range(10)])
    queued(trim, 10)
    small = Call(trim, "small", 5)
    queued(trim, 11)
    gate.open()
    assert blocker.result() == "b" and small.result() == "small" and large.result() == ["w"] * 10
    assert gate.calls[1][0] == ("small", 5)


def test_a_token_budget_uses_the_size_of_each_calls_arguments(
    make_gate: Callable[..., Gate], make_columns: Callable[..., AnyColumns], queued: Callable[..., None]
) -> None:
    gate = make_gate(process=trimmed)

    def run(words: list[str], lengths: list[int]) -> list[str]:
        return gate(list(zip(words, lengths, strict=True)))  # type: ignore[no-any-return]

    b = make_columns(run, max_batch_tokens=12, size_of=lambda call: len(call["words"]), group_by_length=False)
    with pytest.raises(ItemTooLarge, match="13 tokens, more than batcher 'test_a_token_budget"):
        b("x" * 13, 1)
    blocker = Call(b, "blocker", 1)
    gate.wait_blocked()
    words = ["aaaa", "bb", "cccccc", "d", "eeeeeeeeeeee", "ff"]
    calls = [Call(b, w, 2) for w in words]
    queued(b, len(words))
    gate.open()
    assert blocker.result() == "b" and [c.result() for c in calls] == [w[:2] for w in words]
    for batch in gate.calls:
        assert max(len(w) for w, _ in batch) * len(batch) <= 12, gate.calls


def test_on_a_method_each_instance_gets_its_own_batcher_with_self_bound() -> None:
    class Model:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        @batch_columns(max_batch_size=4)
        def tag(self, words: list[str], counts: list[int]) -> list[str]:
            return [f"{self.prefix}{w * n}" for w, n in zip(words, counts, strict=True)]

    a, b = Model("a:"), Model("b:")
    with a.tag as tag_a, b.tag as tag_b:
        assert isinstance(tag_a, ColumnBatcher) and tag_a is not tag_b
        assert (tag_a("x", 2), tag_b(words="y", counts=1)) == ("a:xx", "b:y")
        assert tag_a.max_batch_size == 4


def test_the_shape_is_checked_when_the_batcher_is_built() -> None:
    def varargs(*columns: list[Any]) -> list[Any]:
        return columns[0]

    def reserved(words: list[str], timeout: list[float]) -> list[str]:
        return words

    def nothing() -> list[Any]:
        return []

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs cannot be batched"):
        ColumnBatcher(varargs)
    with pytest.raises(TypeError, match="parameter named 'timeout'.*rename the parameter"):
        ColumnBatcher(reserved)
    with pytest.raises(TypeError, match="takes no parameters"):
        ColumnBatcher(nothing)
    with pytest.raises(TypeError, match="collate does not apply to a column batch function"):
        ColumnBatcher(trimmed, collate=object())  # type: ignore[call-arg]


def test_a_column_batcher_is_a_batcher_whose_items_are_the_calls_arguments_by_name() -> None:
    def trim(words: list[str], lengths: list[int]) -> list[str]:
        return [w[:n] for w, n in zip(words, lengths, strict=True)]

    cols: ColumnBatcher[str, int, str] = ColumnBatcher(trim, name="cols")
    with cols as b:
        assert isinstance(b, Batcher) and b.name == "cols"
        assert repr(b).startswith("<ColumnBatcher 'cols' ")
        assert asyncio.run(b.acall(words="hello", lengths=4)) == "hell"
        assert b.stats.completed == 1
