"""The :func:`~microbatch.batch` decorator: a Batcher typed from ``fn`` that wraps it like ``functools.wraps``.

Its types are a Protocol so that mypy infers ``Batcher[str, int]`` from ``def f(xs: list[str]) ->
list[int]`` (and from a method, whose ``self`` the instance binds), as ``Batcher(fn)`` does; with a
``collate``, ``fn`` takes its batch input and the batcher is untyped, as with ``Batcher``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack, cast, overload

from ._collate import Collate
from ._options import PlainOptions

if TYPE_CHECKING:
    from ._batcher import Batcher

__all__ = ["BatchDecorator", "Decorate", "decorator"]

T = TypeVar("T")
U = TypeVar("U")


class Decorate(Protocol):
    """What ``batch(...)`` returns: applied to a function or a method, a Batcher typed from it."""

    @overload
    def __call__(
        self, fn: Callable[[list[T]], Sequence[U]] | Callable[[list[T]], Awaitable[Sequence[U]]], /
    ) -> Batcher[T, U]: ...

    @overload
    def __call__(
        self, fn: Callable[[Any, list[T]], Sequence[U]] | Callable[[Any, list[T]], Awaitable[Sequence[U]]], /
    ) -> Batcher[T, U]: ...


class DecorateCollated(Protocol):
    """What ``batch(collate=...)`` returns: ``fn`` takes the collated batch input, not a list of items."""

    def __call__(self, fn: Callable[..., Any], /) -> Batcher[Any, Any]: ...


class BatchDecorator(Protocol):
    """The type of :func:`~microbatch.batch`: the same keyword arguments as Batcher."""

    @overload
    def __call__(self, *, collate: Collate, **options: Unpack[PlainOptions]) -> DecorateCollated: ...

    @overload
    def __call__(self, **options: Unpack[PlainOptions]) -> Decorate: ...


def decorator(cls: type[Batcher[Any, Any]]) -> BatchDecorator:
    """The ``batch`` decorator making instances of ``cls`` (passed in: only ``__init__`` imports the Batcher module)."""

    def batch(**options: Any) -> Callable[[Callable[..., Any]], Batcher[Any, Any]]:
        """Decorator form of :class:`Batcher`, taking the same keyword arguments.

        On a function it returns a :class:`Batcher` carrying the function's ``__name__``, ``__doc__``,
        ``__wrapped__`` and the rest (``functools.update_wrapper``); on a method, each instance gets
        its own batcher the first time the attribute is read (so ``self`` is bound and instances never
        share batches).
        """

        def decorate(fn: Callable[..., Any]) -> Batcher[Any, Any]:
            batcher = cls(fn, **options)
            functools.update_wrapper(batcher, fn)
            return batcher

        return decorate

    return cast(BatchDecorator, batch)
