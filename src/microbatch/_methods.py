"""``@batch`` on a method: each instance gets its own batcher, built the first time the attribute is read.

The instance's batcher holds its instance weakly, so a throwaway object does not live on through its
batcher's worker thread: when the object is collected its batcher closes (queued calls fail with
BatcherClosed) and the worker ends. Every instance's batcher keeps the method batcher's ``name``, so
stats, logs, thread names and any metrics label taken from it stay one per method, however many
instances come and go; :meth:`PerInstance.instances` lists the live ones for a collector to sum.
"""

from __future__ import annotations

import inspect
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
    _begin_close: Callable[[bool, str], list[threading.Thread]]

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
                fn = bind_weakly(self._fn, instance, owner, f"{owner.__name__}.{self._attr_name}")
                bound = type(self)(fn, **options)  # type: ignore[call-arg]
                vars(bound).update(vars(self))  # @batch's wrapper attributes (__name__, __doc__, __wrapped__)
                namespace[self._attr_name] = bound
                self._instances.add(bound)
                # Not at exit: the interpreter is ending its threads anyway, and cannot start one then.
                weakref.finalize(instance, _owner_collected, bound, self.name).atexit = False
            return bound


def bind_weakly(fn: Callable[..., Any], instance: object, owner: type, method: str) -> Callable[..., Any]:
    """``fn`` bound to ``instance`` as ``fn.__get__`` binds it, but through a weak reference.

    It keeps what the bound method shows (sync or async, name, signature without ``self``), so a
    column batch function reads its parameters from it; each call binds afresh from the weak reference.
    """
    try:
        ref = weakref.ref(instance)
    except TypeError:
        raise TypeError(
            f"@batch on {method} needs instances that support weak references (its batcher must not keep "
            "them alive); add '__weakref__' to the class's __slots__"
        ) from None
    bound = fn.__get__(instance, owner)  # read here only: nothing below may hold the instance
    gone = f"the object owning {method} was garbage-collected; keep a reference to it while calling its batcher"

    def target() -> Callable[..., Any]:
        alive = ref()
        if alive is None:
            raise BatcherClosed(gone)
        return fn.__get__(alive, owner)  # type: ignore[no-any-return]

    weak: Callable[..., Any]
    if is_async_callable(bound):

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await target()(*args, **kwargs)

        weak = call_async
    else:

        def call(*args: Any, **kwargs: Any) -> Any:
            return target()(*args, **kwargs)

        weak = call
    attributes = vars(weak)
    for name in ("__name__", "__qualname__", "__doc__", "__module__"):
        if hasattr(bound, name):
            setattr(weak, name, getattr(bound, name))
    try:
        attributes["__signature__"] = inspect.signature(bound)
    except (TypeError, ValueError):
        pass  # a callable without a readable signature is called with one list, as before
    return weak


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
