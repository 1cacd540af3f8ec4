"""The seeded-generation example: with one generator per call (torch or numpy), every caller gets the same
output alone or inside any batch, in any order; with one generator per batch (the mistake) it does not."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.seeded_generation import generate, generate_numpy, generate_shared
from microbatch import ColumnBatcher

Call = tuple[str, int, int]  # (prompt, seed, steps)
Generator = ColumnBatcher[str, int, int, list[float]]

prompts = st.sampled_from(["a red fox", "a blue bird", "a lighthouse"])
calls = st.lists(st.tuples(prompts, st.integers(0, 2**31), st.sampled_from([2, 5])), min_size=2, max_size=8)


def alone(b: Generator, call: Call) -> Any:
    """The call's output in a batch of its own (checked: it ran as one batch)."""
    before = b.stats.batches
    out = b(*call)
    assert b.stats.batches == before + 1
    return out


@pytest.mark.parametrize("b", [generate, generate_numpy], ids=["torch-generator", "numpy-generator"])
@settings(max_examples=15, deadline=None)
@given(calls=calls, seed=st.integers())
def test_each_call_gets_its_own_output_alone_or_in_any_company_and_order(
    b: Generator, calls: list[Call], seed: int
) -> None:
    expected = [alone(b, call) for call in calls]
    before = b.stats.batches
    assert b.map(calls) == expected
    if any(x[2] == y[2] for x, y in zip(calls, calls[1:], strict=False)):
        assert b.stats.batches - before < len(calls)  # neighbours with equal steps really shared a batch
    order = list(range(len(calls)))
    random.Random(seed).shuffle(order)
    assert b.map([calls[i] for i in order]) == [expected[i] for i in order]
    # From many threads at once: whatever batches form, each caller gets its own output.
    results: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, b(*calls[i]))) for i in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [results[i] for i in range(len(calls))] == expected


def test_one_generator_per_batch_makes_a_callers_output_depend_on_its_company() -> None:
    first, second = ("a red fox", 1, 2), ("a blue bird", 2, 2)
    assert generate_shared.map([first, second])[1] != alone(generate_shared, second)
    assert generate.map([first, second])[1] == alone(generate, second)
