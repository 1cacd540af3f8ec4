"""The public surface: ``microbatch.__all__`` lists exactly the real public exports, every error
subclasses ``MicrobatchError`` and documents when it is raised, and errors survive pickling (as
they must to cross a process pool)."""

from __future__ import annotations
import __future__

import inspect
import pickle
from pathlib import Path

import pytest

import microbatch
from microbatch import BatcherClosed, BatchSizeMismatch, DeadlineExceeded, MicrobatchError, Overloaded

CONTRACT = {
    "Batcher", "batch", "Stats", "deadline",
    "MicrobatchError", "Overloaded", "DeadlineExceeded", "BatcherClosed", "BatchSizeMismatch",
}


def public_names() -> set[str]:
    return {
        name
        for name, value in vars(microbatch).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, type(__future__.annotations))
    }


def test_all_lists_exactly_the_public_exports_once() -> None:
    assert sorted(set(microbatch.__all__)) == sorted(microbatch.__all__)
    assert set(microbatch.__all__) == public_names()
    assert CONTRACT <= set(microbatch.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from microbatch import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(microbatch.__all__)


def test_every_public_object_has_a_docstring() -> None:
    undocumented = [name for name in microbatch.__all__ if not inspect.getdoc(getattr(microbatch, name))]
    assert undocumented == []


def test_every_exception_subclasses_microbatch_error_and_documents_when_it_is_raised() -> None:
    errors = [
        value for name in microbatch.__all__
        if isinstance(value := getattr(microbatch, name), type) and issubclass(value, BaseException)
    ]
    assert {e.__name__ for e in errors} >= {n for n in CONTRACT if n[0].isupper() and n not in ("Batcher", "Stats")}
    for error in errors:
        assert issubclass(error, MicrobatchError)
        assert issubclass(error, Exception), "a user's `except Exception` catches it"
        assert error.__dict__.get("__doc__"), f"{error.__name__} needs its own docstring"
    assert issubclass(DeadlineExceeded, TimeoutError)


@pytest.mark.parametrize(
    "error",
    [
        Overloaded("queue full", retry_after=1.5),
        BatchSizeMismatch(3, 2),
        DeadlineExceeded("too late"),
        BatcherClosed("closed"),
        MicrobatchError("internal"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_with_their_message_and_attributes(error: MicrobatchError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_the_package_ships_type_information() -> None:
    assert (Path(microbatch.__file__).parent / "py.typed").is_file()
