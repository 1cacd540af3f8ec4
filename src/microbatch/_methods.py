"""``@batch`` on a method: each instance gets its own batcher, built the first time the attribute is read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Self

from ._options import OPTIONS

__all__ = ["PerInstance"]


class PerInstance:
    """Makes a batcher whose function is defined in a class body a per-instance descriptor.

    Only a function defined in that class body is a method; a ready-made batcher assigned to a class
    attribute stays one shared batcher. The bound batcher is stored in the instance's ``__dict__``,
    which shadows this non-data descriptor, so later lookups are plain attribute reads.
    """

    __slots__ = ("_attr_name",)

    _fn: Callable[..., Any]
    _lock: threading.Lock
    name: str

    def __init__(self) -> None:
        self._attr_name: str | None = None  # set when a class body's function is decorated

    def __set_name__(self, owner: type, name: str) -> None:
        if getattr(self._fn, "__qualname__", None) == f"{owner.__qualname__}.{name}":
            self._attr_name = name

    def __get__(self, instance: object | None, owner: type) -> Self:
        if instance is None or self._attr_name is None:
            return self
        try:
            namespace = instance.__dict__
        except AttributeError:
            raise TypeError(
                f"@batch on {owner.__name__}.{self._attr_name} needs instances with a __dict__ to keep "
                "their own batcher; remove __slots__ or add '__dict__' to it"
            ) from None
        with self._lock:
            bound = namespace.get(self._attr_name)
            if not isinstance(bound, type(self)):
                options = {name: getattr(self, name) for name in OPTIONS}
                options["name"] = f"{self.name}[{id(instance):#x}]"
                bound = type(self)(self._fn.__get__(instance, owner), **options)  # type: ignore[call-arg]
                namespace[self._attr_name] = bound
            return bound
