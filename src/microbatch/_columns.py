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

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar, TypeVarTuple, Unpack, cast, overload

from ._batcher import Batcher
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

_KINDS = {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}


class Columns:
    """A column batch function's parameters: binds a call to an item, items to columns, and outputs back."""

    __slots__ = ("name", "signature", "positional", "keyword")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.name = name
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"batch_columns needs a function whose signature can be read; {name!r}: {exc}") from None
        parameters = list(signature.parameters.values())
        for parameter in parameters:
            if parameter.kind not in _KINDS:
                raise TypeError(
                    f"{name}() has the parameter {parameter}: a column batch function takes named parameters, "
                    "one list each; *args and **kwargs cannot be batched"
                )
            if parameter.name == "timeout":
                raise TypeError(
                    f"{name}() has a parameter named 'timeout', the keyword every call uses for its time limit; "
                    "rename the parameter"
                )
        if not parameters:
            raise TypeError(f"{name}() takes no parameters; a column batch function takes one list per parameter")
        self.signature = signature
        self.positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        self.keyword = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def __repr__(self) -> str:
        return f"<Columns {self.name}{self.signature}>"

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """One call's arguments by parameter name, defaults applied; TypeError as calling the function would."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return bound.arguments

    def bind_rows(self, rows: Iterable[Any]) -> list[dict[str, Any]]:
        """A map's rows (argument tuples, or dicts of arguments by name), each bound; nothing is queued on error."""
        if isinstance(rows, (str, bytes, Mapping)):
            raise TypeError(f"{self.name}.map() takes an iterable of argument tuples, got a {type(rows).__name__}")
        items = []
        for index, row in enumerate(rows):
            args: tuple[Any, ...] = ()
            kwargs: Mapping[str, Any] = {}
            if isinstance(row, tuple):
                args = row
            elif isinstance(row, Mapping):
                kwargs = row
            else:
                raise TypeError(
                    f"{self.name}.map(): row {index} is a {type(row).__name__}; pass each call's arguments as a "
                    "tuple (or a dict by parameter name)"
                )
            try:
                items.append(self.bind(args, kwargs))
            except TypeError as exc:
                raise TypeError(f"{self.name}.map(): row {index}: {exc}") from None
        return items

    def arguments(self, items: list[dict[str, Any]]) -> tuple[list[list[Any]], dict[str, list[Any]]]:
        """The batch function's arguments for ``items``: one list per parameter."""
        positional = [[item[name] for item in items] for name in self.positional]
        keyword = {name: [item[name] for item in items] for name in self.keyword}
        return positional, keyword

    def split(self, output: Any, n: int) -> Any:
        """One output per item: a tuple of ``k`` sequences becomes ``n`` tuples of ``k``; anything else is as is."""
        if not isinstance(output, tuple):
            return output  # one output per item: the engine checks it like any batch function's
        for index, column in enumerate(output):
            if isinstance(column, (str, bytes)) or not hasattr(column, "__len__") or not hasattr(column, "__getitem__"):
                raise TypeError(
                    f"the batch function {self.name!r} returned a tuple, which means several outputs (one sequence "
                    f"per output), but output {index} is a {type(column).__name__}; return a list for one output "
                    "per item"
                )
        for column in output:
            if len(column) != n:
                # Handed on with the wrong count so the engine reports BatchSizeMismatch to the whole batch,
                # as for a one-output function, instead of bisecting a function that cannot count.
                return [None] * len(column)
        return list(zip(*output, strict=True))


class _RowFunction:
    """What the worker calls: the user's function on one list per parameter, its outputs split per item."""

    __slots__ = ("__dict__", "_columns")  # __dict__ holds functools.update_wrapper's attributes

    __wrapped__: Callable[..., Any]

    def __init__(self, fn: Callable[..., Any], columns: Columns) -> None:
        functools.update_wrapper(self, fn)
        self._columns = columns

    def __call__(self, items: list[dict[str, Any]]) -> Any:
        args, kwargs = self._columns.arguments(items)
        return self._columns.split(self.__wrapped__(*args, **kwargs), len(items))

    def __get__(self, instance: object, owner: type) -> Any:
        # A method's batcher binds the user's function to each instance (see _methods.PerInstance).
        return self.__wrapped__.__get__(instance, owner)


class _AsyncRowFunction(_RowFunction):
    """:class:`_RowFunction` for an ``async def`` batch function: awaited on the worker's own loop."""

    __slots__ = ()

    async def __call__(self, items: list[dict[str, Any]]) -> Any:
        args, kwargs = self._columns.arguments(items)
        return self._columns.split(await self.__wrapped__(*args, **kwargs), len(items))


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
        row = (_AsyncRowFunction if is_async_callable(fn) else _RowFunction)(fn, columns)
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
