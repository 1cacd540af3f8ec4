"""A client's Redis connection driven directly: one write of several commands, then their replies.

The client's sender and listener threads send a few commands per round trip, thousands of times a
second. Through redis-py's ``Redis``/``Pipeline`` objects each round trip also pays a connection-pool
checkout and return, the retry wrapper, the observability hooks and the response callbacks: measured
under ``load/bench_remote.py``, about as much CPU as the rest of a call. A :class:`Channel` keeps one
connection of its own, made by the client's pool from the same URL (password, ACL user, TLS,
timeouts), and uses only redis-py's connection, packer and parser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Channel"]

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis comes with the remote extra
    _pack_command = None

#: What redis-py's own retry retries once on a fresh connection (a pooled one may have died with an old server).
_RETRIED = (RedisConnectionError, RedisTimeoutError, OSError)


class Channel:
    """One connection of its own for one thread at a time; ``run`` is a pipelined round trip."""

    __slots__ = ("_conn", "round_trips")

    def __init__(self, client: Redis) -> None:
        self._conn: Any = client.connection_pool.make_connection()
        self.round_trips = 0

    def send(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Write ``commands`` without reading (read each reply with :meth:`read`); no retry."""
        self.round_trips += 1
        try:
            self._conn.send_packed_command(self._pack(commands), check_health=False)
        except BaseException:
            self._conn.disconnect()
            raise

    def read(self, timeout: float | None = None) -> Any:
        """The next reply (a ResponseError as a value), waiting up to ``timeout`` seconds if given
        (longer than the connection's socket timeout, for a blocking command); an interrupted read
        drops the connection, whose stream would be out of step."""
        try:
            return self._conn.read_response() if timeout is None else self._conn.read_response(timeout=timeout)
        except ResponseError as error:
            return error
        except BaseException:
            self._conn.disconnect()
            raise

    def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order, a command's error
        (a ResponseError) as its reply. An outage raises a redis-py ConnectionError or TimeoutError
        (one of :data:`~microbatch.remote._redis.OUTAGE`) after one retry on a fresh connection,
        made only when no reply had been read (as redis-py's ``Retry(..., 1)`` does)."""
        conn = self._conn
        self.round_trips += 1
        retried = False
        while True:
            replies: list[Any] = []
            try:
                conn.send_packed_command(self._pack(commands), check_health=False)
                for _ in commands:
                    try:
                        replies.append(conn.read_response())
                    except ResponseError as error:
                        replies.append(error)
                return replies
            except _RETRIED:
                conn.disconnect()  # the next write connects afresh
                if retried or replies:
                    raise
                retried = True
            except BaseException:
                conn.disconnect()  # interrupted mid-reply: the connection's stream is out of step
                raise

    def _pack(self, commands: Sequence[tuple[Any, ...]]) -> Any:
        if _pack_command is None:
            return self._conn.pack_commands(commands)
        # hiredis packs a command in C; redis-py's packer first walks the arguments in Python.
        return [b"".join([_pack_command(command) for command in commands])]

    def close(self) -> None:
        self._conn.disconnect()

    def __repr__(self) -> str:
        return f"<Channel round_trips={self.round_trips} {'connected' if self._conn._sock else 'idle'}>"
