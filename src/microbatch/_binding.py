"""Binding a column batch function's calls: each call's arguments to one item, items to one list per parameter.

:class:`Columns` reads the function's signature once and binds each call (or each row of a map) to
a dict of its arguments by parameter name, on the caller's thread; :class:`RowFunction` is what the
worker calls, the user's function on one list per parameter with its outputs split back per item.
:class:`~microbatch.ColumnBatcher` (in :mod:`._columns`) puts the two on a Batcher.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["AsyncRowFunction", "Columns", "RowFunction"]

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


class RowFunction:
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


class AsyncRowFunction(RowFunction):
    """:class:`RowFunction` for an ``async def`` batch function: awaited on the worker's own loop."""

    __slots__ = ()

    async def __call__(self, items: list[dict[str, Any]]) -> Any:
        args, kwargs = self._columns.arguments(items)
        return self._columns.split(await self.__wrapped__(*args, **kwargs), len(items))
