"""Torch tensors and numpy arrays without importing either: recognise them, pad rows into a batch, split it back.

The helpers behind :class:`~microbatch.tensors.PadCollate`. A value is a tensor or an array when its
type is torch's or numpy's, through whichever of the two the process has already imported; numpy is
imported only to turn lists into arrays when torch is not in use.
"""

from __future__ import annotations

import importlib
import numbers
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from ._errors import BatchSizeMismatch

__all__ = [
    "Side", "array_kind", "default_list_type", "feature_length", "from_list", "item_length", "pad_stack", "quote_names",
    "split_rows",
]

Side = Literal["left", "right"]


def array_kind(value: Any) -> Literal["torch", "numpy"] | None:
    """``"torch"``, ``"numpy"`` or None, without importing either library."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return "torch"
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return "numpy"
    return None


def default_list_type() -> Literal["torch", "numpy"]:
    # A process that serves a torch model has imported torch long before the first request.
    return "torch" if sys.modules.get("torch") is not None else "numpy"


def feature_length(name: str, value: Any) -> int:
    if array_kind(value) is not None:
        shape = tuple(value.shape)
        if len(shape) != 1:
            raise ValueError(
                f"feature {name!r} must be 1-D (one request's tokens), got shape {shape}; "
                "tokenize one text without return_tensors, or take row [0] of a (1, n) tensor"
            )
        return int(shape[0])
    if isinstance(value, (list, tuple)):
        # Checked by element type, not element by element: size() runs on the caller's thread, under the GIL.
        if not all(issubclass(t, numbers.Real) for t in set(map(type, value))):
            raise TypeError(f"feature {name!r} must be a flat list of numbers")
        return len(value)
    raise TypeError(f"feature {name!r} must be a 1-D torch tensor, numpy array or list, got {type(value).__name__}")


def item_length(item: Mapping[str, Any]) -> int:
    # The item was checked by size() at submission: any feature gives the length.
    value = next(iter(item.values()))
    return int(value.shape[0]) if array_kind(value) is not None else len(value)


def from_list(values: Sequence[Any], kind: str, like: Any) -> Any:
    if kind == "torch":
        torch = importlib.import_module("torch")
        return torch.tensor(values, device=None if like is None else like.device)
    try:
        np = importlib.import_module("numpy")
    except ImportError:
        raise ImportError("PadCollate needs numpy (or torch) installed to turn list features into arrays") from None
    return np.asarray(values)


def _signature(value: Any) -> str:
    if array_kind(value) == "torch":
        return f"torch.Tensor {value.dtype} on {value.device}"
    return f"numpy.ndarray {value.dtype}"


def pad_stack(name: str, values: list[Any], lengths: list[int], padded: int, pad: float, side: Side) -> Any:
    first = values[0]
    expected = _signature(first)
    for value in values[1:]:
        if _signature(value) != expected:
            raise TypeError(
                f"feature {name!r} mixes {expected} and {_signature(value)} in one batch: every request must "
                "give a feature the same array type, dtype and device"
            )
    shape = (len(values), padded)
    if array_kind(first) == "torch":
        out = sys.modules["torch"].full(shape, pad, dtype=first.dtype, device=first.device)
    else:
        out = sys.modules["numpy"].full(shape, pad, dtype=first.dtype)
    for row, (value, n) in enumerate(zip(values, lengths, strict=True)):
        if side == "right":
            out[row, :n] = value
        else:
            out[row, padded - n:] = value
    return out


def split_rows(node: Any, trim: Literal["auto"] | bool | frozenset[str | int], spans: list[tuple[int, int]],
           padded: int, where: str) -> list[Any]:
    """One part of ``node`` per item, recursing through dicts and tuples down to the arrays."""
    count = len(spans)
    if node is None:
        return [None] * count
    if isinstance(node, (Mapping, tuple)):
        keys = list(node.keys()) if isinstance(node, Mapping) else list(range(len(node)))
        if isinstance(trim, frozenset):
            unknown = trim.difference(keys)
            if unknown:
                raise ValueError(f"trim names {quote_names(unknown)}, which {where} lacks; it has {quote_names(keys)}")
        parts = [
            split_rows(
                node[key], (key in trim) if isinstance(trim, frozenset) else trim, spans, padded, f"{where}[{key!r}]"
            )
            for key in keys
        ]
        rows = list(zip(*parts, strict=True)) if parts else [()] * count
        if isinstance(node, Mapping):
            return [dict(zip(keys, row, strict=True)) for row in rows]
        make = getattr(type(node), "_make", tuple)  # a namedtuple stays one
        return [make(row) for row in rows]
    kind = array_kind(node)
    if kind is None:
        raise TypeError(
            f"{where} is a {type(node).__name__}: with PadCollate, fn must return a torch tensor or numpy "
            "array with the batch on axis 0, or a tuple or dict of them"
        )
    if isinstance(trim, frozenset):
        raise TypeError(
            f"trim names outputs {quote_names(trim)}, but {where} is a single array: use trim=True or False"
        )
    shape = tuple(node.shape)
    if not shape:
        raise ValueError(f"{where} is a scalar: it needs the batch on axis 0")
    if shape[0] != count:
        raise BatchSizeMismatch(count, int(shape[0]))
    carries_length = len(shape) >= 2 and shape[1] == padded
    if trim is True and not carries_length:
        raise ValueError(
            f"{where} has shape {shape}: trim selects it, but its axis 1 is not the padded length {padded}"
        )
    copy = "clone" if kind == "torch" else "copy"
    if trim is True or (trim == "auto" and carries_length):
        return [getattr(node[row, start:stop], copy)() for row, (start, stop) in enumerate(spans)]
    return [getattr(node[row], copy)() for row in range(count)]


def quote_names(names: Collection[object]) -> str:
    # Sets are listed sorted so that messages are stable.
    listed = sorted(names, key=repr) if isinstance(names, (set, frozenset)) else names
    return ", ".join(repr(name) for name in listed)
