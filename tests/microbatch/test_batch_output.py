"""First-day mistakes with the batch function get a named error saying what ``fn`` must return and what
it returned (with a hint when it looks like a function of one item), and ``map`` refuses a string
instead of submitting one item per character."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from microbatch import BadBatchOutput, BatchSizeMismatch, MicrobatchError

CONTRACT = (
    "must return one output per input, in input order, as an indexable sequence (a list, tuple or array)"
)
PER_ITEM = "It looks like a function of one item: it must take a list of items and return a list of outputs"


@pytest.mark.parametrize(
    ("fn", "returned"),
    [
        (lambda items: None, "returned None. Does it lack a return statement?"),
        (lambda items: dict(enumerate(items)), "returned dict (keyed, not ordered by position)"),
        (lambda items: set(items), "returned set (it has no order): return a list"),
        (lambda item: 42, f"returned int. {PER_ITEM}"),
        (lambda item: "label", f"returned str. {PER_ITEM}"),
        (lambda item: np.float32(0.5), f"returned float32. {PER_ITEM}"),
        (lambda item: np.array(0.5), f"returned ndarray (a scalar, without a length). {PER_ITEM}"),
    ],
    ids=["none", "dict", "set", "int", "str", "numpy-scalar", "0-d-array"],
)
def test_an_output_that_cannot_be_one_per_input_is_a_bad_batch_output_saying_what_was_returned(
    make_batcher: Any, fn: Any, returned: str, is_async: bool
) -> None:
    if is_async:
        sync = fn

        async def fn(items: list[Any]) -> Any:
            return sync(items)

    b = make_batcher(fn, max_wait_ms=0, name="first-day")

    with pytest.raises(BadBatchOutput) as raised:
        b(1)
    message = str(raised.value)
    assert message.startswith(f"the batch function of 'first-day' {CONTRACT}; for a batch of 1 input it {returned}")
    assert isinstance(raised.value, MicrobatchError) and isinstance(raised.value, TypeError)


def test_a_wrong_count_stays_batch_size_mismatch_a_kind_of_bad_batch_output(make_batcher: Any) -> None:
    b = make_batcher(lambda items: [*items, "extra"], max_wait_ms=0, name="count")
    with pytest.raises(BadBatchOutput) as raised:
        b.map([1, 2])
    assert type(raised.value) is BatchSizeMismatch and (raised.value.expected, raised.value.got) == (2, 3)


@pytest.mark.parametrize(
    "output", [[10, 20], (10, 20), np.array([10, 20]), range(10, 30, 10), iter([10, 20])],
    ids=["list", "tuple", "array", "range", "iterator"],
)
def test_indexable_sequences_and_iterators_are_accepted(make_batcher: Any, output: Any) -> None:
    b = make_batcher(lambda items: output, max_wait_ms=0, name="fine")
    assert b.map(["a", "b"]) == [10, 20]


@pytest.mark.parametrize("text", ["abc", b"abc", bytearray(b"abc")], ids=["str", "bytes", "bytearray"])
def test_map_refuses_a_string_naming_both_fixes_and_submits_nothing(
    make_batcher: Any, make_gate: Any, loop_thread: Any, text: Any
) -> None:
    gate = make_gate(open=True)
    b = make_batcher(gate, name="texts")
    word = "text" if isinstance(text, str) else "blob"

    with pytest.raises(TypeError, match=rf"pass \[{word}\] to run it as one item, or map\(list_of_{word}s\)"):
        b.map(text)
    with pytest.raises(TypeError, match=rf"amap\(list_of_{word}s\)"):
        loop_thread.run(b.amap(text))
    assert (b.stats.submitted, b.stats.rejected, gate.calls) == (0, 0, [])
    assert b.map([text]) == [("out", text)]
