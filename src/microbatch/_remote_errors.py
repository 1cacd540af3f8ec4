"""The errors of :mod:`microbatch.remote`, kept free of redis imports so that :mod:`microbatch.web` can map them."""

from __future__ import annotations

from ._errors import MicrobatchError

__all__ = ["RedisUnavailable", "RemoteError"]


class RedisUnavailable(MicrobatchError, ConnectionError):
    """Raised when Redis cannot be reached (or restarted and lost the call) within about a second."""


class RemoteError(MicrobatchError):
    """Raised when a host's batch function raised an exception that is not a microbatch error.

    ``type_name`` is the original exception's qualified type (``"ValueError"``, ``"mylib.BadInput"``)
    and ``remote_message`` its message; the exception object itself never crosses the wire.
    """

    def __init__(self, type_name: str, remote_message: str) -> None:
        super().__init__(f"{type_name}: {remote_message}" if remote_message else type_name)
        self.type_name = type_name
        self.remote_message = remote_message

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.type_name, self.remote_message))
