"""The wire format: Redis key names, the request and reply envelopes, errors as data, the Lua scripts.

One batcher name owns these keys (``{p}`` is ``microbatch:<name>``):

* ``{p}:requests``, a stream: one entry per call or map, fields ``h`` (the msgpack header: reply key,
  request id, single, remaining seconds, item count, codec name) and ``p`` (the items, by the codec).
  Hosts read it as the consumer group ``hosts``.
* ``{p}:waiting``: items accepted and not yet finished, the backpressure counter. Only the Lua
  scripts below change it, so "check, then add" is one atomic step and each entry is counted out once
  (whoever deletes the entry from the stream subtracts its items).
* ``{p}:hosts``, a hash: each live host's published stats, by consumer name.
* ``{p}:cancel``, a pub/sub channel: stream ids of entries whose caller gave up.

Replies go to one list per client process, ``microbatch:reply:<client id>``, which expires unless
replies keep coming: a dead client's key disappears by itself.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from .._errors import (
    BadBatchOutput,
    BatcherClosed,
    BatchSizeMismatch,
    CircuitOpen,
    DeadlineExceeded,
    ItemTooLarge,
    MicrobatchError,
    Overloaded,
)
from .._remote_errors import RedisUnavailable, RemoteError

__all__ = [
    "ADMIT",
    "CANCEL",
    "FINISH",
    "GROUP",
    "Header",
    "Keys",
    "Reply",
    "Script",
    "decode_error",
    "decode_replies",
    "encode_error",
    "encode_replies",
    "stream_age",
]

GROUP = "hosts"
REPLY_TTL_MS = 60_000  # a reply key outlives its client by at most this long


class Keys:
    """The Redis keys of one batcher name."""

    __slots__ = ("name", "requests", "waiting", "hosts", "cancel")

    def __init__(self, name: str) -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"a remote batcher name must be non-empty without spaces, got {name!r}")
        prefix = f"microbatch:{name}"
        self.name = name
        self.requests = f"{prefix}:requests"
        self.waiting = f"{prefix}:waiting"
        self.hosts = f"{prefix}:hosts"
        self.cancel = f"{prefix}:cancel"

    def __repr__(self) -> str:
        return f"<Keys {self.name!r}>"


def reply_key(client_id: str) -> str:
    return f"microbatch:reply:{client_id}"


@dataclass(frozen=True, slots=True)
class Header:
    """What a host needs to know about a request besides its items."""

    reply_to: str
    request_id: int
    single: bool
    timeout: float | None  # seconds left when the entry was added; None: no limit
    size: int
    codec: str

    def pack(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            [self.reply_to, self.request_id, self.single, self.timeout, self.size, self.codec], use_bin_type=True
        )

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        reply_to, request_id, single, timeout, size, codec = msgpack.unpackb(data, raw=False)
        return cls(reply_to, request_id, single, timeout, size, codec)


def stream_age(entry_id: bytes | str, redis_clock_offset: float) -> float:
    """Seconds since Redis added the entry (its id starts with Redis's clock in ms), by this machine's clock."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    added_ms = int(text.split("-", 1)[0])
    return (time.time() + redis_clock_offset) - added_ms / 1000.0


# ---------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Reply:
    """One request's outcome: ``payload`` (the codec's bytes of the results) or ``error``."""

    request_id: int
    payload: bytes | None
    error: tuple[str, str, dict[str, Any]] | None = None


def encode_replies(replies: list[Reply]) -> bytes:
    """Every reply bound for one client in one flush, as one list element."""
    return msgpack.packb(  # type: ignore[no-any-return]
        [(r.request_id, r.payload, r.error) for r in replies], use_bin_type=True
    )


def decode_replies(blob: bytes) -> list[Reply]:
    return [Reply(rid, payload, tuple(error) if error is not None else None)
            for rid, payload, error in msgpack.unpackb(blob, raw=False)]


# ---------------------------------------------------------------------------------------------- errors

# The microbatch errors a reply may name; anything else is raised as RemoteError.
_KNOWN: dict[str, type[MicrobatchError]] = {
    cls.__name__: cls
    for cls in (Overloaded, CircuitOpen, DeadlineExceeded, BatcherClosed, BatchSizeMismatch, BadBatchOutput,
                ItemTooLarge, RedisUnavailable, MicrobatchError)
}


def encode_error(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """An exception as data: its type's name, its message and the attributes its microbatch type needs."""
    cls = type(exc)
    if isinstance(exc, RemoteError):
        return exc.type_name, exc.remote_message, {}
    if _KNOWN.get(cls.__name__) is cls:
        extra: dict[str, Any] = {}
        if isinstance(exc, Overloaded):
            extra["retry_after"] = exc.retry_after
        elif isinstance(exc, BatchSizeMismatch):
            extra = {"expected": exc.expected, "got": exc.got}
        return cls.__name__, str(exc), extra
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return name, str(exc), {}


def decode_error(type_name: str, message: str, extra: dict[str, Any]) -> MicrobatchError:
    """The exception to raise in the caller for an error that crossed the wire."""
    cls = _KNOWN.get(type_name)
    if cls is Overloaded or cls is CircuitOpen:
        return cls(message, retry_after=float(extra.get("retry_after", 1.0)))
    if cls is BatchSizeMismatch:
        return BatchSizeMismatch(int(extra["expected"]), int(extra["got"]))
    if cls is not None:
        return cls(message)
    return RemoteError(type_name, message)


# ---------------------------------------------------------------------------------------------- Lua


class Script:
    """A Lua script and its SHA1, for EVALSHA in pipelines (SCRIPT LOAD again after NOSCRIPT)."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.sha[:8]}>"


#: KEYS: requests, waiting. ARGV: items, limit, header, payload.
#: Returns {1, entry id} or {0, items waiting}: the length check and the add are one atomic step.
ADMIT = Script("""
local n = tonumber(ARGV[1])
local waiting = tonumber(redis.call('GET', KEYS[2]) or '0')
if waiting + n > tonumber(ARGV[2]) then return {0, waiting} end
redis.call('INCRBY', KEYS[2], n)
return {1, redis.call('XADD', KEYS[1], '*', 'h', ARGV[3], 'p', ARGV[4])}
""")

#: KEYS: requests, waiting. ARGV: entry id, items, cancel channel.
#: Deletes the entry if no host finished it yet (a host that has it reads the channel and drops it).
CANCEL = Script("""
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then redis.call('DECRBY', KEYS[2], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
""")

#: KEYS: requests, waiting. ARGV: group, reply ttl ms, k, k x (entry id, items), then (reply key, blob) pairs.
#: Replies first, then XACK and XDEL; an entry's items leave the counter only if this call deleted it,
#: so a request run twice (at-least-once, after a claim) is counted out once.
FINISH = Script("""
local k = tonumber(ARGV[3])
local i = 4 + 2 * k
while i <= #ARGV do
  redis.call('RPUSH', ARGV[i], ARGV[i + 1])
  redis.call('PEXPIRE', ARGV[i], ARGV[2])
  i = i + 2
end
for j = 0, k - 1 do
  local id = ARGV[4 + 2 * j]
  redis.call('XACK', KEYS[1], ARGV[1], id)
  if redis.call('XDEL', KEYS[1], id) == 1 then redis.call('DECRBY', KEYS[2], ARGV[5 + 2 * j]) end
end
return k
""")
