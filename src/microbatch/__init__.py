"""microbatch: dynamic request batching for ML models served from ordinary Python web apps."""

from __future__ import annotations

from ._batcher import Batcher, BatcherOptions, batch
from ._collate import Collate
from ._deadline import deadline
from ._protocol import SupportsBatching
from ._errors import BatcherClosed, BatchSizeMismatch, DeadlineExceeded, ItemTooLarge, MicrobatchError, Overloaded
from ._stats import Histogram, Stats

__all__ = [
    "BatchSizeMismatch",
    "Batcher",
    "BatcherClosed",
    "BatcherOptions",
    "Collate",
    "DeadlineExceeded",
    "Histogram",
    "ItemTooLarge",
    "MicrobatchError",
    "Overloaded",
    "Stats",
    "SupportsBatching",
    "batch",
    "deadline",
]

__version__ = "0.1.0"
