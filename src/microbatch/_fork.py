"""Fork safety: objects whose threads must be reset in a forked child, where the parent's threads do not exist."""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["track_for_fork"]


class _ForkSafe(Protocol):
    def _reset_after_fork(self) -> None: ...


_tracked: weakref.WeakSet[_ForkSafe] = weakref.WeakSet()


def track_for_fork(owner: _ForkSafe) -> None:
    """Have ``owner._reset_after_fork()`` called in a forked child, where the parent's threads do not exist."""
    _tracked.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_tracked):
        owner._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
