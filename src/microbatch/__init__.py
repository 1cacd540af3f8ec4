"""microbatch: dynamic request batching for ML models served from ordinary Python web apps."""

from __future__ import annotations

from importlib import metadata as _metadata

from ._batcher import Batcher, batch
from ._collate import Collate
from ._columns import ColumnBatcher, ColumnDecorator, batch_columns
from ._deadline import deadline
from ._errors import (
    BadBatchOutput,
    BatcherClosed,
    BatchSizeMismatch,
    CircuitOpen,
    DeadlineExceeded,
    ItemTooLarge,
    MicrobatchError,
    Overloaded,
)
from ._options import BatcherOptions
from ._protocol import SupportsBatching
from ._stats import Histogram, Stats

__all__ = [
    "BadBatchOutput",
    "BatchSizeMismatch",
    "Batcher",
    "BatcherClosed",
    "BatcherOptions",
    "CircuitOpen",
    "Collate",
    "ColumnBatcher",
    "ColumnDecorator",
    "DeadlineExceeded",
    "Histogram",
    "ItemTooLarge",
    "MicrobatchError",
    "Overloaded",
    "Stats",
    "SupportsBatching",
    "batch",
    "batch_columns",
    "deadline",
]

try:
    __version__ = _metadata.version("microbatch")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
