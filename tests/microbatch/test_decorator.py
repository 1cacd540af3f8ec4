"""The ``@batch`` decorator: on a function it makes a ``Batcher``; on a method each instance gets a
batcher of its own, with ``self`` bound, so instances never share batches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from microbatch import Batcher, batch
from microbatch._options import PlainOptions


def test_batch_on_a_function_makes_a_batcher_with_those_options() -> None:
    @batch(max_batch_size=4, max_wait_ms=0, small_request_size=1, on_error="fail_batch", name="embed")
    def embed(texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    assert isinstance(embed, Batcher)
    with embed:
        assert (embed.max_batch_size, embed.max_wait_ms, embed.small_request_size) == (4, 0, 1)
        assert (embed.on_error, embed.name) == ("fail_batch", "embed")
        assert embed("abc") == 3
        assert embed.map(["a", "bb", "ccc"]) == [1, 2, 3]


def test_batch_on_a_method_gives_each_instance_its_own_batcher_with_self_bound() -> None:
    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        @batch(max_batch_size=8, max_wait_ms=0)
        def predict(self, xs: list[int]) -> list[int]:
            return [self.scale * x for x in xs]

    small, large = Model(10), Model(100)

    assert isinstance(small.predict, Batcher)
    assert small.predict is small.predict, "one batcher per instance, made on first access"
    assert small.predict is not large.predict
    with small.predict, large.predict:
        assert small.predict(1) == 10
        assert large.predict(1) == 100
        assert small.predict.map([1, 2, 3]) == [10, 20, 30]
        assert small.predict.max_batch_size == 8


def test_each_instances_batcher_keeps_every_option_given_to_the_decorator() -> None:
    options: PlainOptions = {
        "max_batch_size": 3, "max_wait_ms": 7, "small_request_size": 1, "max_queue_size": 50,
        "on_error": "fail_batch", "aging_ms": 250, "timeout": 30.0, "max_batch_tokens": 64, "group_by_length": False,
    }

    named: PlainOptions = {**options, "name": "model"}

    class Model:
        @batch(**named)
        def predict(self, xs: list[str]) -> list[str]:
            return xs

    model = Model()
    bound = model.predict
    with bound:
        assert {name: getattr(bound, name) for name in options} == options
        assert bound.name == "model", "every instance's batcher reports under the method batcher's name"
        assert bound("a") == "a"


def test_instances_never_share_a_batch(make_gate: Any, spawn: Any, wait_until: Any) -> None:
    gate = make_gate(lambda items: items)

    class Model:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @batch(max_batch_size=8, max_wait_ms=0)
        def predict(self, xs: list[str]) -> list[tuple[str, str]]:
            return [(self.tag, x) for x in gate(xs)]

    one, two = Model("one"), Model("two")
    calls = [spawn(one.predict, "one-first"), spawn(two.predict, "two-first")]
    wait_until(lambda: gate.blocked == 2, "both instances' workers are held")
    calls += [spawn(m.predict, f"{m.tag}-{i}") for i in range(3) for m in (one, two)]
    wait_until(lambda: one.predict.stats.queue_depth == two.predict.stats.queue_depth == 3, "both queues hold 3")
    gate.open()

    for call in calls:
        tag, item = call.result()
        assert item.startswith(tag), "each result comes from its own instance's self"
    for items in gate.calls:
        assert len({x.split("-")[0] for x in items}) == 1, f"a batch mixed instances: {items}"
    assert sorted(gate.sizes) == [1, 1, 3, 3]
    one.predict.close()
    two.predict.close()


def test_an_async_method_is_batched_per_instance_too(loop_thread: Any) -> None:
    class Model:
        def __init__(self, offset: int) -> None:
            self.offset = offset

        @batch(max_wait_ms=0)
        async def predict(self, xs: list[int]) -> list[int]:
            return [x + self.offset for x in xs]

    model = Model(1000)
    with model.predict:
        assert loop_thread.run(model.predict.acall(1)) == 1001
        assert model.predict(2) == 1002


def test_a_ready_made_batcher_assigned_to_a_class_attribute_stays_one_shared_batcher() -> None:
    def double(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    class Service:
        shared = Batcher(double)

    with Service.shared:
        assert Service().shared is Service().shared is Service.shared
        assert Service().shared(4) == 8


def test_batch_on_a_method_of_a_slotted_class_says_how_to_fix_it() -> None:
    class Slotted:
        __slots__ = ()

        @batch()
        def predict(self, xs: list[int]) -> list[int]:
            return xs

    with pytest.raises(TypeError, match="__slots__"):
        _ = Slotted().predict  # binding the method is what raises


def test_batch_on_functions_and_methods_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    """The package ships type information, so the documented uses must pass a strict type check."""
    (tmp_path / "service.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from microbatch import batch


            @batch(max_batch_size=8)
            def embed(texts: list[str]) -> list[int]:
                return [len(t) for t in texts]


            class Model:
                def __init__(self, scale: int) -> None:
                    self.scale = scale

                @batch(max_batch_size=8)
                def predict(self, xs: list[int]) -> list[int]:
                    return [self.scale * x for x in xs]

                @batch()
                async def apredict(self, xs: list[int]) -> list[int]:
                    return xs


            lengths: list[int] = embed.map(["a", "bb"])
            value: int = Model(2).predict(3)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), "service.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
