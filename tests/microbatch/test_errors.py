"""Errors: with ``on_error="isolate"`` a failing batch is bisected until the bad items are alone,
and only their callers get the exception (the original type and message); ``"fail_batch"`` gives
it to every caller of the batch; a wrong number of outputs is ``BatchSizeMismatch`` for every caller
(a real check that survives ``python -O``); and nothing the batch function does, not even a
``BaseException``, stops the worker or leaves a caller waiting."""

from __future__ import annotations

import asyncio
import errno
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from microbatch import BatchSizeMismatch, MicrobatchError


class BadInput(Exception):
    """What the fake model raises for an item it cannot handle."""


class ModelError(Exception):
    """An exception whose constructor builds its message, as many libraries' exceptions do."""

    def __init__(self, item: Any) -> None:
        super().__init__(f"the model cannot handle {item!r}")
        self.item = item


class ModelFileMissing(FileNotFoundError):
    """A user subclass of a built-in exception whose fields live outside ``args``."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOENT, "model file missing", path)


class SlottedError(Exception):
    """An exception keeping its state in ``__slots__`` (as attrs' slotted classes do)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"the model failed with code {self.code}"


class Raiser:
    """A batch function process that raises ``BadInput`` naming the first bad item of a batch, and
    keeps every exception it raised."""

    def __init__(self, bad: set[Any]) -> None:
        self.bad = bad
        self.raised: list[BaseException] = []

    def __call__(self, items: list[Any]) -> list[Any]:
        for x in items:
            if x in self.bad:
                error = BadInput(f"cannot process {x!r}")
                self.raised.append(error)
                raise error
        return [("out", x) for x in items]


def test_one_bad_item_fails_only_its_own_caller_with_the_original_exception(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    raiser = Raiser({"bad"})
    gate = make_gate(raiser)
    b = make_batcher(gate, max_batch_size=32, max_wait_ms=0, name="isolate-one")
    items: list[Any] = [*range(20), "bad", *range(20, 31)]
    blocker = hold(b, gate)
    calls = enqueue(b, *items)
    gate.open()

    blocker.result()
    for x, call in zip(items, calls, strict=True):
        if x == "bad":
            error = call.exception()
            assert type(error) is BadInput
            assert str(error) == "cannot process 'bad'"
            assert error is raiser.raised[-1], "the very exception the batch function raised"
        else:
            assert call.result() == ("out", x)
    runs = len(gate.calls) - 1
    assert runs <= 1 + 2 * math.log2(32), f"bisection should take about 2*log2(n) extra calls, took {runs}"
    stats = b.stats
    assert (stats.completed, stats.failed) == (32, 1)


def test_two_bad_items_each_fail_only_their_own_caller(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    gate = make_gate(Raiser({"bad-a", "bad-b"}))
    b = make_batcher(gate, max_batch_size=16, max_wait_ms=0, name="isolate-two")
    items: list[Any] = [0, 1, "bad-a", 2, 3, 4, 5, 6, 7, 8, 9, 10, "bad-b", 11, 12, 13]
    hold(b, gate)
    calls = enqueue(b, *items)
    gate.open()

    for x, call in zip(items, calls, strict=True):
        if isinstance(x, str):
            error = call.exception()
            assert type(error) is BadInput and str(error) == f"cannot process {x!r}"
        else:
            assert call.result() == ("out", x)
    assert b("next") == ("out", "next")


def test_a_map_holding_a_bad_item_fails_as_a_whole_while_its_batch_mates_succeed(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    gate = make_gate(Raiser({"bad"}))
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="isolate-map")
    hold(b, gate)
    before, bulk, after = enqueue(b, "before", ["m0", "bad", "m2"], "after")
    gate.open()

    assert before.result() == ("out", "before")
    assert after.result() == ("out", "after")
    error = bulk.exception()
    assert type(error) is BadInput and str(error) == "cannot process 'bad'"


def test_an_async_batch_function_is_isolated_the_same_way(
    make_batcher: Any, make_gate: Any, queued: Any, loop_thread: Any, hold: Any
) -> None:
    gate = make_gate(Raiser({"bad"}), is_async=True)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="isolate-async")
    hold(b, gate)
    calls = {x: loop_thread.start(b.acall(x)) for x in ["a", "bad", "c", "d"]}
    queued(b, 4)
    gate.open()

    assert [calls[x].result() for x in "acd"] == [("out", x) for x in "acd"]
    assert type(calls["bad"].exception()) is BadInput


def test_fail_batch_gives_every_caller_of_the_batch_the_exception_each_its_own_copy(
    make_batcher: Any, make_gate: Any, hold: Any, enqueue: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise ModelError("bad")
        return [("out", x) for x in items]

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, on_error="fail_batch", name="fail-batch")
    hold(b, gate)
    calls = enqueue(b, "a", "bad", "c", "d")
    gate.open()

    errors = [call.exception() for call in calls]
    for error in errors:
        assert type(error) is ModelError
        assert str(error) == "the model cannot handle 'bad'"
        assert error.item == "bad"
    assert len({id(e) for e in errors}) == 4, "each caller raises its own copy"
    assert len(gate.calls) == 2, "no bisection with fail_batch"
    assert b("next") == ("out", "next"), "the next batch is not affected"
    assert b.stats.failed == 4


def case(error: BaseException, *attributes: str) -> Any:
    return pytest.param(error, attributes, id=type(error).__name__)


@pytest.mark.parametrize(
    ("error", "attributes"),
    [
        case(FileNotFoundError(errno.ENOENT, "No such file or directory", "model.bin"), "errno", "filename"),
        case(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "encoding", "start", "reason"),
        case(ImportError("no module named tokenizer", name="tokenizer"), "name"),
        case(subprocess.CalledProcessError(2, ["convert"], "partial"), "returncode", "cmd", "output"),
        case(KeyError("missing-feature")),
        case(ModelError("bad"), "item"),
        case(ModelFileMissing("/models/encoder.bin"), "errno", "filename"),
        case(SlottedError(3), "code"),
    ],
)
def test_with_fail_batch_every_callers_copy_keeps_the_exceptions_type_message_and_attributes(
    make_batcher: Any, make_gate: Any, error: Exception, attributes: tuple[str, ...], hold: Any, enqueue: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise error
        return [("out", x) for x in items]

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, on_error="fail_batch", name="copies")
    hold(b, gate)
    calls = enqueue(b, "a", "bad", "c")
    gate.open()

    for call in calls:
        got = call.exception()
        assert type(got) is type(error)
        assert str(got) == str(error)
        assert got.args == error.args
        for name in attributes:
            assert getattr(got, name) == getattr(error, name), name


@pytest.mark.parametrize("on_error", ["isolate", "fail_batch"])
@pytest.mark.parametrize("change", [-1, +1], ids=["one-short", "one-extra"])
def test_a_wrong_number_of_outputs_raises_batch_size_mismatch_for_every_caller_of_the_batch(
    make_batcher: Any, make_gate: Any, on_error: str, change: int, hold: Any, enqueue: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        out = [("out", x) for x in items]
        if "odd" in items:
            return out[:change] if change < 0 else out + [("out", "extra")]
        return out

    gate = make_gate(process)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, on_error=on_error, name="mismatch")
    hold(b, gate)
    calls = enqueue(b, "a", "odd", "c", "d")
    gate.open()

    for call in calls:
        error = call.exception()
        assert isinstance(error, BatchSizeMismatch)
        assert (error.expected, error.got) == (4, 4 + change)
        assert "4 inputs" in str(error) and f"{4 + change} outputs" in str(error)
    assert len(gate.calls) == 2, "a mismatch is the whole batch's fault: no bisection"
    assert b("next") == ("out", "next")


def test_the_output_count_check_is_real_code_that_survives_python_O(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from microbatch import Batcher, BatchSizeMismatch

        if __debug__:
            sys.exit("not running under python -O")
        with Batcher(lambda items: items[:-1], name="optimised") as b:
            try:
                b.map([1, 2, 3])
            except BatchSizeMismatch as error:
                print(error.expected, error.got)
            else:
                sys.exit("no BatchSizeMismatch under -O")
        """
    )
    run = subprocess.run([sys.executable, "-O", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["3", "2"]


class BrokenLength:
    """An output whose ``__len__`` raises, as a buggy user container might."""

    def __len__(self) -> int:
        raise LookupError("broken __len__")

    def __getitem__(self, index: int) -> Any:
        return index


@pytest.mark.parametrize(
    ("output", "error_type"),
    [(BrokenLength(), LookupError), (None, TypeError), (42, TypeError)],
    ids=["raising-len", "none", "not-a-sequence"],
)
def test_an_unusable_output_fails_the_batch_and_the_worker_keeps_serving(
    make_batcher: Any, make_gate: Any, output: Any, error_type: type[Exception], hold: Any, enqueue: Any
) -> None:
    gate = make_gate(lambda items: output if "odd" in items else [("out", x) for x in items])
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, on_error="fail_batch", name="bad-output")
    hold(b, gate)
    calls = enqueue(b, "a", "odd")
    gate.open()

    for call in calls:
        assert isinstance(call.exception(), error_type)
    assert b("next") == ("out", "next")


def test_an_output_without_len_such_as_a_generator_is_accepted(make_batcher: Any, make_gate: Any) -> None:
    gate = make_gate(lambda items: (("out", x) for x in items), open=True)
    b = make_batcher(gate, name="generator-output")

    assert b.map([1, 2, 3]) == [("out", 1), ("out", 2), ("out", 3)]


class Abort(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


@pytest.mark.parametrize(
    "raised",
    [KeyboardInterrupt, SystemExit, Abort, asyncio.CancelledError, GeneratorExit],
    ids=lambda t: t.__name__,
)
def test_a_base_exception_from_fn_fails_its_batch_with_microbatch_error_and_the_worker_survives(
    make_batcher: Any, make_gate: Any, raised: type[BaseException], is_async: bool,
    thread_errors: Any, hold: Any, enqueue: Any
) -> None:
    def process(items: list[Any]) -> list[Any]:
        if "boom" in items:
            raise raised("from the model")
        return [("out", x) for x in items]

    gate = make_gate(process, is_async=is_async)
    b = make_batcher(gate, max_batch_size=8, max_wait_ms=0, name="base-exception")
    hold(b, gate)
    calls = enqueue(b, "a", "boom", "c")
    gate.open()

    for call in calls:
        error = call.exception()
        assert isinstance(error, MicrobatchError) and isinstance(error, Exception)
        assert raised.__name__ in str(error)
        assert isinstance(error.__cause__, raised)
    assert b("next") == ("out", "next")
    assert b.map(["x", "y"]) == [("out", "x"), ("out", "y")]
    assert thread_errors == []
