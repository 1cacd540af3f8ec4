"""The engine's one scheduling clock: arrivals, deadlines, wait bounds and run times all read it.

Modules call ``_clock.now()`` through this module (never ``from ._clock import now``) so that a test
can replace it in one place and drive time instead of sleeping.
"""

from __future__ import annotations

import time

__all__ = ["now"]

now = time.monotonic
