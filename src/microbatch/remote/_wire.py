"""The wire format: Redis key names, the request and reply envelopes, errors as data, the Lua scripts.

One batcher name owns these keys (``{p}`` is ``microbatch:<name>``):

* ``{p}:requests``, a stream. Each entry carries the calls one client process sent in one round
  trip: field ``r`` is the client's reply key, and each call is one more field, its msgpack header
  (request id, single, remaining seconds, item count, codec name) mapped to its items (by the codec).
  Hosts read it as the consumer group ``hosts``; an entry is acknowledged once all its calls are done.
* ``{p}:waiting``: items accepted and not yet finished, the backpressure counter. Only the Lua
  scripts below change it, so "check, then add" is one atomic step and each entry is counted out once
  (whoever deletes the entry from the stream subtracts its items).
* ``{p}:hosts``, a hash: each live host's published stats, by consumer name.
* ``{p}:cancel``, a pub/sub channel: ``<stream id> <request id>`` of calls whose caller gave up.

Replies go to one list per client process, ``microbatch:reply:<client id>``, which expires unless
replies keep coming: a dead client's key disappears by itself.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, NamedTuple

import msgpack

from .. import _errors
from .._errors import BatchSizeMismatch, CircuitOpen, MicrobatchError, Overloaded
from .._remote_errors import RedisUnavailable, RemoteError

__all__ = [
    "ADMIT",
    "CANCEL",
    "FINISH",
    "GROUP",
    "MAX_CALLS_PER_ENTRY",
    "REPLY_FIELD",
    "REPLY_TTL_MS",
    "Header",
    "Keys",
    "Reply",
    "Script",
    "added_ms",
    "decode_error",
    "decode_replies",
    "encode_error",
    "encode_replies",
    "pack_header",
]

GROUP = "hosts"
REPLY_TTL_MS = 60_000  # a reply key outlives its client by at most this long


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer (``msgpack.packb`` builds a new one per call, 4x the cost of packing a header)."""
    try:
        return _local.packer
    except AttributeError:
        _local.packer = packer = msgpack.Packer(use_bin_type=True)
        return packer


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


REPLY_FIELD = b"r"  # an entry's field holding the reply key; every other field is a call


class Header(NamedTuple):
    """What a host needs to know about one call besides its items (the field name of the call in its entry).

    A named tuple, not a dataclass: a host builds one per call it reads, and a tuple is built in a
    fraction of a frozen dataclass's time.
    """

    request_id: int
    single: bool
    timeout: float | None  # seconds left when the call was sent; None: no limit
    size: int
    codec: str
    return_exceptions: bool = False  # a map that takes its failed items' errors in their places

    def pack(self) -> bytes:
        return pack_header(self.request_id, self.single, self.timeout, self.size, self.codec, self.return_exceptions)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        request_id, single, timeout, size, codec, *rest = msgpack.unpackb(data, raw=False)
        if type(request_id) is not int or type(size) is not int or size < 1:
            raise ValueError(f"a malformed call header: {data!r}")
        if timeout is not None and type(timeout) is not float:
            timeout = float(timeout)
        return cls(request_id, bool(single), timeout, size, codec if type(codec) is str else str(codec),
                   bool(rest and rest[0]))


def pack_header(
    request_id: int, single: bool, timeout: float | None, size: int, codec: str, return_exceptions: bool = False
) -> bytes:
    """:meth:`Header.pack` without building a Header: the client packs one per call on its hot path."""
    # The sixth field only when set: a header without it reads as before (older hosts read the rest).
    fields = (request_id, single, timeout, size, codec, True) if return_exceptions else (
        request_id, single, timeout, size, codec)
    return _packer().pack(fields)  # type: ignore[no-any-return]


def added_ms(entry_id: bytes) -> int:
    """When Redis added the entry, in ms of Redis's clock (its id starts with it: ``<ms>-<seq>``)."""
    return int(entry_id[:entry_id.index(b"-")])


# ---------------------------------------------------------------------------------------------- replies


#: An error as data: its type's name, its message, the attributes its microbatch type needs.
WireError = tuple[str, str, dict[str, Any]]

#: One call's outcome on the wire: (request id, the codec's bytes of its results or None, its error or
#: None), and for a map with ``return_exceptions`` whose items failed in part, a fourth element: the
#: ``(index, error)`` of each failed item (its place in the results holds None).
Reply = tuple[int, bytes | None, WireError | None] | tuple[int, bytes | None, None, list[tuple[int, WireError]]]


def encode_replies(replies: list[Reply]) -> bytes:
    """Every reply bound for one client in one flush, as one list element."""
    return _packer().pack(replies)  # type: ignore[no-any-return]


def decode_replies(blob: bytes) -> list[list[Any]]:
    """The ``[request id, payload, error]`` (and, for a partly failed map, ``item errors``) of each reply
    in a blob from :func:`encode_replies`."""
    return msgpack.unpackb(blob, raw=False, use_list=True)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- errors

# The microbatch errors a reply may name (the engine's own list, and RedisUnavailable); anything else is
# raised as RemoteError.
_KNOWN: dict[str, type[MicrobatchError]] = {
    cls.__name__: cls for cls in (*(getattr(_errors, name) for name in _errors.__all__), RedisUnavailable)
}


def encode_error(exc: BaseException) -> WireError:
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


#: KEYS: requests, waiting. ARGV: reply key, then for each call: items, limit, header, payload.
#: Returns {entry id (nil if none was accepted), then per call: -1 if accepted, else the items waiting}.
#: Each call's length check and add are one atomic step; the accepted calls share one entry.
ADMIT = Script("""
local waiting = tonumber(redis.call('GET', KEYS[2]) or '0')
local fields = {'r', ARGV[1]}
local out = {false}
local added = 0
for i = 2, #ARGV, 4 do
  local n = tonumber(ARGV[i])
  if waiting + n > tonumber(ARGV[i + 1]) then
    out[#out + 1] = waiting
  else
    waiting = waiting + n
    added = added + n
    fields[#fields + 1] = ARGV[i + 2]
    fields[#fields + 1] = ARGV[i + 3]
    out[#out + 1] = -1
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[2], added)
  out[1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return out
""")

#: The most calls one ADMIT packs into an entry (Lua's unpack() has a stack limit of a few thousand values).
MAX_CALLS_PER_ENTRY = 256

#: KEYS: requests, waiting. ARGV: entry id, items, cancel channel, message, "1" if the call is alone in its entry.
#: A call alone in its entry is deleted if no host finished it yet; in any case the hosts hear of it
#: (one holding it drops it; the others remember it, in case they read the entry later).
CANCEL = Script("""
if ARGV[5] == '1' and redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then redis.call('DECRBY', KEYS[2], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
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
