"""``MICROBATCH_REMOTE``: the app config key that sends batched functions to model hosts over Redis.

* ``None`` (the default): every batched function runs in this process, on its own Batcher.
* a Redis URL (``"redis://host:6379/0"``): every batched function of the app calls the hosts that
  serve its batcher name (``microbatch serve ... --name NAME``) through a
  :class:`microbatch.remote.RemoteBatcher`; the function itself is never called in this process.
* a dict ``{batcher name: URL}``: only those names go remote, the others run in this process.

A function's batcher name is its ``@mb.batch(name=...)``, else ``<app.name>.<function name>``. A remote
batcher takes the app's ``timeout`` (``MICROBATCH_TIMEOUT``, else the RemoteBatcher's finite default)
and ``max_queue_size`` (the most items waiting for the name over all clients); the other options
configure the host's Batcher (``microbatch serve`` flags) and are not used by the web process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from microbatch import SupportsBatching

__all__ = ["REMOTE_KEY", "check_remote", "remote_batcher", "remote_url"]

REMOTE_KEY = "MICROBATCH_REMOTE"


def check_remote(value: object, app_name: str) -> None:
    """ValueError naming the fix unless ``value`` is None, a Redis URL, or a dict of batcher name -> URL."""
    if value is None or _is_url(value):
        return
    if isinstance(value, Mapping) and all(isinstance(k, str) and _is_url(v) for k, v in value.items()):
        return
    raise ValueError(
        f"bad batching config on the Flask app {app_name!r}: {REMOTE_KEY} = {value!r}; set it to None (batch in "
        'this process), a Redis URL such as "redis://127.0.0.1:6379/0" (every batched function calls the hosts '
        'serving its name), or a dict {"batcher name": "redis://..."}'
    )


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.partition("://")[0] in ("redis", "rediss", "unix")


def remote_url(value: object, name: str) -> str | None:
    """The URL of the hosts serving ``name`` under the config ``value``, or None to batch in this process."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        url = value.get(name)
        return url if isinstance(url, str) else None
    return None


def remote_batcher(name: str, url: str, settings: Mapping[str, Any]) -> SupportsBatching[Any, Any]:
    """A RemoteBatcher for ``name`` with the app's timeout and queue bound."""
    try:
        from microbatch.remote import RemoteBatcher
    except ImportError as exc:  # redis or msgpack missing
        raise RuntimeError(
            f"{REMOTE_KEY} sends {name!r} to {url} but microbatch.remote cannot be imported ({exc}): "
            "pip install 'microbatch[remote]'"
        ) from exc
    options: dict[str, Any] = {"max_queue_size": settings["max_queue_size"]}
    if settings.get("timeout") is not None:
        options["timeout"] = settings["timeout"]
    return RemoteBatcher(name, url=url, **options)
