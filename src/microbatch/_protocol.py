"""SupportsBatching: the call surface shared by an in-process Batcher and a RemoteBatcher."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, TypeVar, overload, runtime_checkable

from ._stats import Stats

__all__ = ["SupportsBatching"]

T_contra = TypeVar("T_contra", contravariant=True)
U = TypeVar("U")


@runtime_checkable
class SupportsBatching(Protocol[T_contra, U]):
    """What code and the web adapters need of a batcher: :class:`~microbatch.Batcher` and
    :class:`microbatch.remote.RemoteBatcher` both satisfy it, so either can be passed where it is taken.

    ``isinstance(obj, SupportsBatching)`` checks that the members exist, not their signatures.
    """

    @property
    def name(self) -> str:
        """The batcher's name (a remote batcher's is the name its hosts serve)."""
        ...

    @property
    def max_batch_size(self) -> int:
        """Most items one call of the batch function receives."""
        ...

    @property
    def timeout(self) -> float | None:
        """The default timeout, in seconds, of calls that pass none."""
        ...

    @property
    def closed(self) -> bool:
        """True once close() or aclose() has been called."""
        ...

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of counters and recent timings."""
        ...

    def __call__(self, item: T_contra, *, timeout: float | None = None) -> U: ...

    async def acall(self, item: T_contra, *, timeout: float | None = None) -> U: ...

    @overload
    def map(
        self, items: Iterable[T_contra], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    def map(
        self, items: Iterable[T_contra], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    @overload
    async def amap(
        self, items: Iterable[T_contra], *, timeout: float | None = ..., return_exceptions: Literal[False] = ...
    ) -> list[U]: ...

    @overload
    async def amap(
        self, items: Iterable[T_contra], *, timeout: float | None = ..., return_exceptions: bool
    ) -> list[U | Exception]: ...

    def start(self) -> None: ...

    def close(self, drain: bool = True) -> None: ...

    async def aclose(self, drain: bool = True) -> None: ...
