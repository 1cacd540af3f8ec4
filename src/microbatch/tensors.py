"""Tensor batching: pad per-request features into one batch, and cut the batch output back per caller.

Many apps tokenize each request and call a model's forward on a dict of tensors (``input_ids``,
``attention_mask``, ...). :class:`PadCollate` lets a :class:`~microbatch.Batcher` batch such calls::

    from microbatch import Batcher
    from microbatch.tensors import PadCollate

    def forward(features):                       # dict of (batch, padded length) tensors
        with torch.inference_mode():
            return model(**features).last_hidden_state

    encoder = Batcher(forward, collate=PadCollate(pad_values={"input_ids": 0, "attention_mask": 0}),
                      max_batch_tokens=8192)
    hidden = encoder(tokenizer(text))            # this caller's (own length, hidden) tensor

This module imports neither torch nor numpy: it recognises a tensor or an array by its type, through
whichever of the two the process has already imported, and imports numpy only to turn lists into
arrays when torch is not in use.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from ._arrays import (
    Side,
    array_kind,
    default_list_type,
    feature_length,
    from_list,
    item_length,
    pad_stack,
    quote_names,
    split_rows,
)

__all__ = ["PadCollate"]

ListType = Literal["auto", "torch", "numpy"]

_DEFAULT_PADS: Mapping[str, float] = MappingProxyType({"input_ids": 0, "attention_mask": 0})


class PadCollate:
    """A :class:`~microbatch.Collate` for per-request dicts of 1-D token features.

    **Items.** Each item (one request) is a mapping from feature name to a 1-D torch tensor, a 1-D
    numpy array, or a list/tuple of numbers, with exactly the features named in ``pad_values``, all of
    one length (the item's :meth:`size`, its number of tokens). A tokenizer's output for one text
    (``tokenizer(text)``) is such an item. Malformed items are refused at submission with a
    ``ValueError``/``TypeError`` that names the feature.

    **Lists** become an array of the item's other features' kind (torch tensor on the same device, or
    numpy array); an item made only of lists becomes torch tensors when ``list_type="torch"``, or with
    ``"auto"`` when torch is imported in the process, else numpy arrays. Their dtype is what
    ``torch.tensor``/``numpy.asarray`` give (int64 for Python ints).

    **Collation.** :meth:`collate` returns ``{feature: (items, padded length) tensor}``: each feature
    padded with its own value on ``side``, keeping its dtype and device (nothing is cast to int64).
    The requests of one batch must agree on each feature's kind, dtype and device, else the batch
    raises ``TypeError`` (the batcher's ``on_error="isolate"`` then runs them apart).

    **Splitting and trimming.** ``fn`` returns a tensor/array, or a tuple or dict (a Hugging Face
    ``ModelOutput`` is one) of them, nested at will, with the batch on axis 0. Each caller gets its
    row of every array (a copy, so it holds no reference to the batch; dicts become plain dicts).
    An array *carries the length axis* when it is trimmed back to the caller's own tokens on axis 1
    (the last ``n`` positions with ``side="left"``, the first ``n`` with ``"right"``). ``trim`` says
    which arrays do:

    * ``"auto"`` (default): those whose axis 1 equals the batch's padded length. A guess: a pooled
      ``(batch, d)`` output is cut wrongly in a batch padded to exactly ``d`` tokens, so when a
      non-token output's axis 1 can take such a size, name the outputs instead.
    * ``True`` / ``False``: every array / none.
    * A collection of top-level dict keys or tuple positions, e.g. ``{"last_hidden_state"}``: the
      arrays under them, and no others.

    An array that ``True`` or a name selects must have the padded length on axis 1, else ``split``
    raises ``ValueError``; an array whose axis 0 is not the batch raises
    :class:`~microbatch.BatchSizeMismatch`.
    """

    __slots__ = ("pad_values", "side", "trim", "list_type")

    def __init__(
        self,
        pad_values: Mapping[str, float] = _DEFAULT_PADS,
        *,
        side: Side = "right",
        trim: Literal["auto"] | bool | Collection[str | int] = "auto",
        list_type: ListType = "auto",
    ) -> None:
        if not isinstance(pad_values, Mapping) or not pad_values:
            raise TypeError(
                f"pad_values must be a non-empty dict of feature name -> pad value, got {pad_values!r}; "
                "e.g. pad_values={'input_ids': tokenizer.pad_token_id, 'attention_mask': 0}"
            )
        given: Mapping[Any, object] = pad_values  # checked as untyped user input
        for name, pad in given.items():
            if not isinstance(name, str) or not isinstance(pad, numbers.Real):
                raise TypeError(f"pad_values maps feature names (str) to numbers, got {name!r}: {pad!r}")
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        if list_type not in ("auto", "torch", "numpy"):
            raise ValueError(f"list_type must be 'auto', 'torch' or 'numpy', got {list_type!r}")
        self.pad_values: Mapping[str, float] = MappingProxyType(dict(pad_values))
        self.side: Side = side
        self.trim: Literal["auto"] | bool | frozenset[str | int] = _check_trim(trim)
        self.list_type: ListType = list_type

    def __repr__(self) -> str:
        trim = self.trim if not isinstance(self.trim, frozenset) else set(self.trim)
        return (
            f"PadCollate(pad_values={dict(self.pad_values)!r}, side={self.side!r}, trim={trim!r}, "
            f"list_type={self.list_type!r})"
        )

    # ------------------------------------------------------------------ the Collate protocol

    def size(self, item: Any) -> int:
        """The item's number of tokens, after checking that it is a well-formed request."""
        if not isinstance(item, Mapping):
            raise TypeError(
                f"each item must be a dict of feature name -> 1-D tensor/array/list, got {type(item).__name__}"
            )
        if not item:
            raise ValueError("empty item: it has no features; expected " + quote_names(self.pad_values))
        unpadded = [name for name in item if name not in self.pad_values]
        if unpadded:
            example = ", ".join(f"{name!r}: 0" for name in unpadded)
            raise ValueError(
                f"feature(s) {quote_names(unpadded)} have no pad value: add them to pad_values "
                f"(e.g. {{..., {example}}}) or leave them out of the item"
            )
        absent = [name for name in self.pad_values if name not in item]
        if absent:
            raise ValueError(f"the item lacks feature(s) {quote_names(absent)} named in pad_values")
        lengths = {name: feature_length(name, value) for name, value in item.items()}
        length = next(iter(lengths.values()))
        if any(n != length for n in lengths.values()):
            detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
            raise ValueError(f"the features of one item must have equal lengths, got {detail}")
        if length == 0:
            raise ValueError("empty item: its features have no tokens")
        return length

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """``{feature: (len(items), longest) tensor}``, each row padded with the feature's pad value."""
        lengths = [item_length(item) for item in items]
        padded = max(lengths)
        arrays = [self._arrays(item) for item in items]
        return {
            name: pad_stack(name, [a[name] for a in arrays], lengths, padded, pad, self.side)
            for name, pad in self.pad_values.items()
        }

    def split(self, output: Any, items: list[Any]) -> Sequence[Any]:
        """Each item's part of ``fn``'s output, trimmed back to its own length where ``trim`` says."""
        lengths = [item_length(item) for item in items]
        padded = max(lengths)
        if self.side == "right":
            spans = [(0, n) for n in lengths]
        else:
            spans = [(padded - n, padded) for n in lengths]
        return split_rows(output, self.trim, spans, padded, "the output")

    # ------------------------------------------------------------------ helpers

    def _arrays(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The item's features as tensors/arrays; lists follow the item's other features."""
        like = next((v for v in item.values() if array_kind(v) is not None), None)
        kind = array_kind(like) or (self.list_type if self.list_type != "auto" else default_list_type())
        return {
            name: value if array_kind(value) is not None else from_list(value, kind, like)
            for name, value in item.items()
        }


def _check_trim(trim: object) -> Literal["auto"] | bool | frozenset[str | int]:
    if trim == "auto" or isinstance(trim, bool):
        return trim
    if isinstance(trim, Collection) and not isinstance(trim, (str, bytes)):
        names = frozenset(trim)
        if all(isinstance(name, (str, int)) and not isinstance(name, bool) for name in names):
            return names
    hint = f"; did you mean trim={{{trim!r}}}?" if isinstance(trim, str) else ""
    raise ValueError(
        f"trim must be 'auto', True, False, or a collection of output keys/positions, got {trim!r}{hint}"
    )
