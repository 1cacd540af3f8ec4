"""``@batch`` on a method: each instance gets its own batcher, built the first time the attribute is read.

The instance's batcher holds its instance weakly, so a throwaway object does not live on through its
batcher's worker thread: when the object is collected its batcher closes (queued calls fail with
BatcherClosed) and the worker ends. Every instance's batcher keeps the method batcher's ``name``, so
stats, logs, thread names and any metrics label taken from it stay one per method, however many
instances come and go; :meth:`PerInstance.instances` lists the live ones for a collector to sum.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, Self

from ._errors import BatcherClosed
from ._options import OPTIONS
from ._worker import is_async_callable

__all__ = ["PerInstance", "bind_weakly"]


class _Closable(Protocol):
    def _begin_close(self, drain: bool, why: str, /) -> object: ...


class PerInstance:
    """Makes a batcher whose function is defined in a class body a per-instance descriptor.

    Only a function defined in that class body is a method; a ready-made batcher assigned to a class
    attribute stays one shared batcher. The bound batcher is stored in the instance's ``__dict__``,
    which shadows this non-data descriptor, so later lookups are plain attribute reads.
    """

    __slots__ = ("_attr_name", "_instances")

    _fn: Callable[..., Any]
    _lock: threading.Lock
    name: str
    _begin_close: Callable[[bool, str], threading.Thread | None]

    def __init__(self) -> None:
        self._attr_name: str | None = None  # set when a class body's function is decorated
        self._instances: weakref.WeakSet[Self] = weakref.WeakSet()

    def __set_name__(self, owner: type, name: str) -> None:
        if getattr(self._fn, "__qualname__", None) == f"{owner.__qualname__}.{name}":
            self._attr_name = name

    def instances(self) -> list[Self]:
        """The live instances' batchers of this method (for a metrics collector to report as one)."""
        return list(self._instances)

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
                fn = bind_weakly(self._fn, instance, f"{owner.__name__}.{self._attr_name}")
                bound = type(self)(fn, **options)  # type: ignore[call-arg]
                vars(bound).update(vars(self))  # @batch's wrapper attributes (__name__, __doc__, __wrapped__)
                namespace[self._attr_name] = bound
                self._instances.add(bound)
                # Not at exit: the interpreter is ending its threads anyway, and cannot start one then.
                weakref.finalize(instance, _owner_collected, bound, self.name).atexit = False
            return bound


def bind_weakly(fn: Callable[..., Any], instance: object, method: str) -> Callable[[Any], Any]:
    """``fn`` bound to ``instance`` through a weak reference, keeping ``fn``'s sync or async kind."""
    try:
        ref = weakref.ref(instance)
    except TypeError:
        raise TypeError(
            f"@batch on {method} needs instances that support weak references (its batcher must not keep "
            "them alive); add '__weakref__' to the class's __slots__"
        ) from None

    gone = f"the object owning {method} was garbage-collected; keep a reference to it while calling its batcher"

    def owner() -> object:  # closes over the weak reference only: nothing here may hold the instance
        alive = ref()
        if alive is None:
            raise BatcherClosed(gone)
        return alive

    if is_async_callable(fn):

        async def call_async(items: Any) -> Any:
            return await fn(owner(), items)

        return call_async

    def call(items: Any) -> Any:
        return fn(owner(), items)

    return call


def _owner_collected(batcher: _Closable, name: str) -> None:
    """Close ``batcher``, whose instance was collected, from a thread of its own.

    A finalizer runs wherever the object died, possibly inside this very batcher's lock (the cyclic
    collector runs at any allocation), so taking the lock here could deadlock: a short-lived thread takes it.
    """
    why = "was closed: the object owning it was garbage-collected"
    try:
        threading.Thread(
            target=batcher._begin_close, args=(False, why), name=f"microbatch-close-{name}", daemon=True
        ).start()
    except RuntimeError:
        pass  # the interpreter is shutting down: its daemon threads end with it
