"""Batches of compatible calls only: each item's group key (``group_by``) and a cost model per group.

A batcher with ``group_by`` computes every item's key on the caller's thread when the call is
admitted (a key function that raises, or a key that cannot be hashed, fails that call alone and
queues nothing). Forming (``_forming``) then takes the top-priority request's key and fills the batch
only with items of that key, so a batch never mixes keys and priority across groups stays the heap's.

Groups can cost very different amounts (50 diffusion steps against 10), so each group also keeps its
own fit of ``a + b*n`` (and of the padded-token cost for length-aware batchers): the wait for company
and the length grouping of a batch read the model of the group that batch belongs to, and fall back
to the batcher-wide model for a group not measured yet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ._cost import CostModel

__all__ = ["MAX_GROUP_MODELS", "GroupCosts", "group_keys", "same_key"]

MAX_GROUP_MODELS = 256  # groups whose cost models are kept; the least recently run beyond it are forgotten


def group_keys(group_by: Callable[[Any], Hashable], items: list[Any], name: str) -> list[Hashable]:
    """Each item's group key, checked hashable; raises in the caller, before anything is queued."""
    keys = [group_by(item) for item in items]
    for index, key in enumerate(keys):
        try:
            hash(key)
        except TypeError:
            where = "the item" if len(items) == 1 else f"item {index}"
            raise TypeError(
                f"group_by of batcher {name!r} returned an unhashable key for {where}: {key!r}; "
                "return a hashable value such as a str, a number or a tuple of them"
            ) from None
    return keys


def same_key(a: Hashable, b: Hashable) -> bool:
    """Keys are equal for batching: identical or ``==`` (so a NaN key is at least equal to itself)."""
    return a is b or a == b


class GroupCosts:
    """The cost models of the most recently run groups: batch run time and padded-token run time.

    Used under the batcher's lock. A model is returned only once it has a fit, so callers fall back
    to the batcher-wide model for a group that has not run yet.
    """

    __slots__ = ("_models", "_limit")

    def __init__(self, limit: int = MAX_GROUP_MODELS) -> None:
        self._models: OrderedDict[Hashable, tuple[CostModel, CostModel]] = OrderedDict()
        self._limit = limit

    def __repr__(self) -> str:
        return f"<GroupCosts groups={len(self._models)}>"

    def __len__(self) -> int:
        return len(self._models)

    def add(self, key: Hashable, n: int, seconds: float, padded: int | None) -> None:
        """A batch of ``n`` items of group ``key`` ran successfully in ``seconds`` (``padded`` tokens, if measured)."""
        models = self._models.get(key)
        if models is None:
            models = self._models[key] = (CostModel(), CostModel())
            if len(self._models) > self._limit:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(key)
        models[0].add(n, seconds)
        if padded is not None:
            models[1].add(padded, seconds)

    def batch_cost(self, key: Hashable) -> CostModel | None:
        """Group ``key``'s fit of run time against items, or None before it has run."""
        models = self._models.get(key)
        return None if models is None else models[0]

    def token_cost(self, key: Hashable) -> CostModel | None:
        """Group ``key``'s fit of run time against padded tokens, or None before it has been measured."""
        models = self._models.get(key)
        return None if models is None or models[1].fixed is None else models[1]
