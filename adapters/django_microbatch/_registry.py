"""One shared batcher per entry of ``settings.MICROBATCH``: a :class:`~microbatch.Batcher`, or with a
``"remote"`` URL a :class:`~microbatch.remote.RemoteBatcher` calling the model hosts that serve the name.

A batcher is built on the first lookup of its name (so settings are read lazily), once per process,
under a lock, and shared by every view and thread. When ``settings.MICROBATCH`` changes (the
``setting_changed`` signal, sent by ``override_settings``), batchers whose entry changed or went away
are closed and forgotten; the next lookup builds them afresh. Everything is drained at process exit.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from microbatch import Batcher, SupportsBatching
from microbatch._options import OPTIONS, resolve

from ._conf import conf

__all__ = ["KEYS", "close_all", "configure", "get_batcher", "lookup"]

# Every engine option, from the engine's schema, except "name": an entry's key in settings.MICROBATCH
# names its batcher. "fn" (and "collate", "on_worker_start", "group_by", "size_of", "coalesce", when strings) are
# dotted paths resolved here; coalesce's True and False are not strings, so they stay booleans.
_BATCHER_OPTIONS = tuple(name for name in OPTIONS if name != "name")
_IMPORTED = ("fn", "collate", "on_worker_start", "group_by", "size_of", "coalesce")
# "remote": a Redis URL (the hosts serving this name run fn), or None to batch in this process.
KEYS = ("fn", *_BATCHER_OPTIONS, "remote")
# What a remote entry's client uses; the other options configure the hosts (microbatch serve flags).
_REMOTE_OPTIONS = ("timeout", "max_queue_size")


_lock = threading.Lock()
# name -> (the settings entry it was built from, the batcher)
_entries: dict[str, tuple[dict[str, Any], SupportsBatching[Any, Any]]] = {}


def get_batcher(name: str) -> SupportsBatching[Any, Any]:
    """The shared batcher configured as ``settings.MICROBATCH[name]``, built on first use.

    Raises ``ImproperlyConfigured`` naming the offending key when the entry is missing or invalid.
    """
    return lookup(name, "the name passed to get_batcher()")


def lookup(name: str, source: str) -> SupportsBatching[Any, Any]:
    """:func:`get_batcher`, with ``source`` saying where ``name`` came from for the unknown-name error."""
    with _lock:
        entry = _entries.get(name)
        if entry is None:
            configured = conf.MICROBATCH
            if name not in configured:
                listed = ", ".join(map(repr, configured)) or "none"
                raise ImproperlyConfigured(
                    f"{source} is {name!r}, which settings.MICROBATCH does not configure (configured names: "
                    f"{listed}). Add {name!r} to settings.MICROBATCH or correct {source}."
                )
            # Built under the lock (importing fn may load a model) so that racing first requests share one.
            batcher = _build(name, configured[name])
            entry = _entries[name] = (dict(configured[name]), batcher)
        return entry[1]


def configure(name: str, entry: object) -> tuple[Callable[..., Any] | str, dict[str, Any]]:
    """``settings.MICROBATCH[name]`` as a batch function (or, for a remote entry, its Redis URL) and
    checked options.

    Raises ``ImproperlyConfigured`` naming the offending key and the fix. Used to build the batcher
    and by the system check (``django_microbatch.apps``), so both report the same problems. A remote
    entry's ``fn`` is not imported: the model loads in the hosts only.
    """
    where = f"settings.MICROBATCH[{name!r}]"
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict with at least 'fn', got {type(entry).__name__}")
    unknown = [key for key in entry if key not in KEYS]
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(map(repr, KEYS))}"
        )
    remote = entry.get("remote")
    if remote is not None:
        return _remote_url(where, remote), _checked({k: v for k, v in entry.items() if k in _BATCHER_OPTIONS},
                                                    name, where)
    if "fn" not in entry:
        raise ImproperlyConfigured(
            f"{where} has no 'fn': set it to the dotted path of the batch function, e.g. 'myproject.models.embed_texts'"
        )
    values = {key: value for key, value in entry.items() if key != "remote"}
    for key in _IMPORTED:
        if isinstance(values.get(key), str):
            try:
                values[key] = import_string(values[key])
            except ImportError as exc:
                raise ImproperlyConfigured(f"{where}[{key!r}] = {entry[key]!r} cannot be imported: {exc}") from exc
    fn = values.pop("fn")
    if not callable(fn):
        raise ImproperlyConfigured(
            f"{where}: Batcher needs a callable batch function, got {type(fn).__name__}: "
            "set 'fn' to the dotted path of a function that takes a list of items"
        )
    return fn, _checked(values, name, where)


def _checked(values: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    try:
        resolve({**values, "name": name})  # the engine's own check names the option and the fix
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from exc
    return values


def _remote_url(where: str, value: object) -> str:
    if not (isinstance(value, str) and value.partition("://")[0] in ("redis", "rediss", "unix")):
        raise ImproperlyConfigured(
            f"{where}['remote'] = {value!r}: set it to the Redis URL of the model hosts serving this name, "
            "e.g. 'redis://127.0.0.1:6379/0' (they run `microbatch serve ... --name NAME`), or None to batch here"
        )
    return value


def _build(name: str, entry: object) -> SupportsBatching[Any, Any]:
    fn, options = configure(name, entry)
    if not isinstance(fn, str):
        return Batcher(fn, name=name, **options)
    try:
        from microbatch.remote import RemoteBatcher
    except ImportError as exc:  # redis or msgpack missing
        raise ImproperlyConfigured(
            f"settings.MICROBATCH[{name!r}]['remote'] needs microbatch.remote ({exc}): pip install 'microbatch[remote]'"
        ) from exc
    remote = {key: options[key] for key in _REMOTE_OPTIONS if options.get(key) is not None}
    return RemoteBatcher(name, url=fn, **remote)


def close_all(drain: bool = True) -> None:
    """Close every batcher built so far (draining queued calls by default) and forget them.

    Runs at process exit; tests may call it between tests. A later lookup builds a fresh batcher.
    """
    with _lock:
        batchers = [batcher for _, batcher in _entries.values()]
        _entries.clear()
    for batcher in batchers:
        batcher.close(drain=drain)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting != "MICROBATCH":
        return
    try:
        configured = conf.MICROBATCH
    except ImproperlyConfigured:
        configured = {}  # the lookup will report it; nothing built from the old value stays valid
    with _lock:
        stale = [name for name, (entry, _) in _entries.items() if configured.get(name) != entry]
        dropped = [_entries.pop(name)[1] for name in stale]
    # Closed outside the lock: draining waits for queued calls, which must not block other lookups.
    for batcher in dropped:
        batcher.close(drain=True)


setting_changed.connect(_on_setting_changed, dispatch_uid="django_microbatch.settings")
atexit.register(close_all)
