"""A collate importable by dotted path from ``settings.MICROBATCH`` (``"djmb_collate.CHARS"``)."""

from __future__ import annotations

from collections.abc import Sequence


class CharCollate:
    """Strings as items: an item's size is its length; the batch input is the list itself."""

    def size(self, item: str) -> int:
        return len(item)

    def collate(self, items: list[str]) -> list[str]:
        return list(items)

    def split(self, output: list[str], items: list[str]) -> Sequence[str]:
        return output


CHARS = CharCollate()


def shout(texts: list[str]) -> list[str]:
    return [text.upper() for text in texts]
