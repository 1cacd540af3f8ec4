"""Batch functions of several parameters, one list each (Gradio's shape): :class:`ColumnBatcher`, :func:`batch_columns`.

``@batch_columns(...)`` on ``def trim(words: list[str], lengths: list[int]) -> list[str]`` makes
``trim("hello", 3)`` (or ``trim(words="hello", lengths=3)``) one call of a batch: each call's
arguments are bound to the function's signature on the caller's thread (a wrong call raises the
``TypeError`` calling the function would, and queues nothing), queued as one item, the dict of its
arguments by parameter name, and the worker calls the function with one list per parameter. A
function that returns a tuple has several outputs, one sequence each, and each caller gets its
tuple; any other return value is one output per item, as with :class:`~microbatch.Batcher`.

The shape is explicit (a separate decorator), never inferred from a signature: a plain batch
function of one list, a method, a ``functools.partial`` or a function with extra optional
parameters keeps meaning what it meant. Everything else is the Batcher's: the item a ``group_by``
or ``size_of`` function receives is that dict of arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar, TypeVarTuple, Unpack, cast, overload

from ._batcher import Batcher
from ._binding import AsyncRowFunction, Columns, RowFunction
from ._options import PlainOptions
from ._worker import is_async_callable

__all__ = ["ColumnBatcher", "batch_columns"]

Ts = TypeVarTuple("Ts")
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
X = TypeVar("X")
Y = TypeVar("Y")
Z = TypeVar("Z")


class ColumnBatcher(Batcher[dict[str, Any], R], Generic[*Ts, R]):
    """A :class:`~microbatch.Batcher` whose function takes one list per parameter; called with the parameters.

    ``ColumnBatcher[str, int, str]`` is called ``b("hello", 3)``, ``b(words="hello", lengths=3)``,
    ``await b.acall(...)``, ``b.map([("hello", 3), ...])`` (rows are argument tuples, or dicts by
    parameter name) and ``await b.amap(...)``, each with the keyword ``timeout``. A call is bound to
    the function's signature before anything is queued. It takes every Batcher option but
    ``collate``; ``group_by`` and ``size_of`` receive each call's arguments as a dict by parameter
    name. Build one with :func:`batch_columns` for precise types.
    """

    __slots__ = ("_columns",)

    def __init__(self, fn: Callable[..., Any], **options: Unpack[PlainOptions]) -> None:
        if not callable(fn):
            raise TypeError(f"ColumnBatcher needs a callable batch function, got {type(fn).__name__}")
        if cast("dict[str, Any]", options).pop("collate", None) is not None:  # a method's rebuild passes None
            raise TypeError(
                "collate does not apply to a column batch function (it receives one list per parameter); "
                "build the model input inside the function"
            )
        columns = Columns(fn, getattr(fn, "__name__", None) or type(fn).__name__)  # named as Python names it
        row = (AsyncRowFunction if is_async_callable(fn) else RowFunction)(fn, columns)
        super().__init__(cast("Callable[[list[dict[str, Any]]], Sequence[R]]", row), **options)
        self._columns = columns

    @overload  # type: ignore[override]
    def __call__(self, *args: *Ts, timeout: float | None = None) -> R: ...

    @overload
    def __call__(self, *, timeout: float | None = None, **kwargs: Any) -> R: ...

    def __call__(self, *args: *Ts, timeout: float | None = None, **kwargs: Any) -> R:
        """Run one call, by position or by parameter name, in a batch; block until its output."""
        return super().__call__(self._columns.bind(args, kwargs), timeout=timeout)

    @overload  # type: ignore[override]
    async def acall(self, *args: *Ts, timeout: float | None = None) -> R: ...

    @overload
    async def acall(self, *, timeout: float | None = None, **kwargs: Any) -> R: ...

    async def acall(self, *args: *Ts, timeout: float | None = None, **kwargs: Any) -> R:
        """Run one call in a batch from any event loop."""
        return await super().acall(self._columns.bind(args, kwargs), timeout=timeout)

    @overload
    def map(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[R]: ...

    @overload
    def map(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[R | Exception]: ...

    def map(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run many calls (argument tuples, or dicts by parameter name) as one request, admitted whole or not
        at all; outputs in order (with ``return_exceptions``, a failed call's exception in its place)."""
        return super().map(self._columns.bind_rows(rows), timeout=timeout, return_exceptions=return_exceptions)

    @overload
    async def amap(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[R]: ...

    @overload
    async def amap(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[R | Exception]: ...

    async def amap(
        self, rows: Iterable[tuple[*Ts] | Mapping[str, Any]], *, timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Async :meth:`map`."""
        return await super().amap(self._columns.bind_rows(rows), timeout=timeout, return_exceptions=return_exceptions)

    def __repr__(self) -> str:
        text = super().__repr__()
        return "<ColumnBatcher" + text.removeprefix("<Batcher") if text.startswith("<Batcher ") else text

    def __enter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self


# What a column batch function may return: one sequence (an output per item) or a tuple of sequences, maybe awaited.
_One: TypeAlias = Sequence[R] | Awaitable[Sequence[R]]
_Two: TypeAlias = tuple[Sequence[X], Sequence[Y]] | Awaitable[tuple[Sequence[X], Sequence[Y]]]
_Three: TypeAlias = (
    tuple[Sequence[X], Sequence[Y], Sequence[Z]] | Awaitable[tuple[Sequence[X], Sequence[Y], Sequence[Z]]]
)


class ColumnDecorator:
    """What :func:`batch_columns` returns: applied to a function, it builds that function's :class:`ColumnBatcher`.

    Overloaded for functions of 1 to 5 positional parameters returning one sequence or a tuple of 2
    or 3: the batcher is then typed by the element types (``list[str]`` parameters take ``str``
    arguments; a ``tuple[list[str], list[int]]`` return gives each caller a ``tuple[str, int]``).
    Other functions (keyword-only parameters, more parameters or outputs) get an untyped batcher.
    """

    __slots__ = ("_options",)

    def __init__(self, options: PlainOptions) -> None:
        self._options = options

    def __repr__(self) -> str:
        return f"<ColumnDecorator {dict(self._options)!r}>"

    @overload
    def __call__(self, fn: Callable[[list[A]], _Three[X, Y, Z]]) -> ColumnBatcher[A, tuple[X, Y, Z]]: ...
    @overload
    def __call__(self, fn: Callable[[list[A]], _Two[X, Y]]) -> ColumnBatcher[A, tuple[X, Y]]: ...
    @overload
    def __call__(self, fn: Callable[[list[A]], _One[R]]) -> ColumnBatcher[A, R]: ...
    @overload
    def __call__(self, fn: Callable[[list[A], list[B]], _Three[X, Y, Z]]) -> ColumnBatcher[A, B, tuple[X, Y, Z]]: ...
    @overload
    def __call__(self, fn: Callable[[list[A], list[B]], _Two[X, Y]]) -> ColumnBatcher[A, B, tuple[X, Y]]: ...
    @overload
    def __call__(self, fn: Callable[[list[A], list[B]], _One[R]]) -> ColumnBatcher[A, B, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C]], _Three[X, Y, Z]]
    ) -> ColumnBatcher[A, B, C, tuple[X, Y, Z]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C]], _Two[X, Y]]
    ) -> ColumnBatcher[A, B, C, tuple[X, Y]]: ...
    @overload
    def __call__(self, fn: Callable[[list[A], list[B], list[C]], _One[R]]) -> ColumnBatcher[A, B, C, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D]], _Three[X, Y, Z]]
    ) -> ColumnBatcher[A, B, C, D, tuple[X, Y, Z]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D]], _Two[X, Y]]
    ) -> ColumnBatcher[A, B, C, D, tuple[X, Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D]], _One[R]]
    ) -> ColumnBatcher[A, B, C, D, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D], list[E]], _Three[X, Y, Z]]
    ) -> ColumnBatcher[A, B, C, D, E, tuple[X, Y, Z]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D], list[E]], _Two[X, Y]]
    ) -> ColumnBatcher[A, B, C, D, E, tuple[X, Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[[list[A], list[B], list[C], list[D], list[E]], _One[R]]
    ) -> ColumnBatcher[A, B, C, D, E, R]: ...
    @overload
    def __call__(self, fn: Callable[..., Any]) -> ColumnBatcher[*tuple[Any, ...], Any]: ...

    def __call__(self, fn: Callable[..., Any]) -> ColumnBatcher[*tuple[Any, ...], Any]:
        return ColumnBatcher(fn, **self._options)


def batch_columns(**options: Unpack[PlainOptions]) -> ColumnDecorator:
    """Decorator: a batch function of one list per parameter becomes a :class:`ColumnBatcher`, called with the
    parameters themselves (``trim("hello", 3)``). Takes every :class:`~microbatch.Batcher` option but ``collate``.

    On a method, each instance gets its own batcher, as with :func:`~microbatch.batch`.
    """
    return ColumnDecorator(options)
