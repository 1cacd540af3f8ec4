"""The example model's torch threads follow the call's size: a handful of texts runs on one thread
(a team of two only adds hand-offs to matrices that small), a larger call on the worker's count,
and a text's vector does not depend on which."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest


def on_a_new_thread(work: Callable[[], object]) -> object:
    """``work()``'s result, run on a thread of its own (as a batcher's worker or a request thread runs it)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join(120)
    assert out, "the call did not finish"
    return out[0]


def test_a_small_call_runs_on_one_torch_thread_and_a_large_one_on_the_workers_count(
    embed: Callable[[list[str]], list[list[float]]],
) -> None:
    import torch

    from examples import _embedder

    worker_count = _embedder.threads_for(64)  # EMBED_TORCH_THREADS, or what torch chose for the main thread
    small, large = ["a cat"] * _embedder.ONE_THREAD_UP_TO, ["a cat"] * (_embedder.ONE_THREAD_UP_TO + 1)

    def threads_after(*calls: list[str]) -> list[int]:
        seen = []
        for texts in calls:
            embed(texts)
            seen.append(torch.get_num_threads())
        return seen

    assert on_a_new_thread(lambda: threads_after(["a cat"], large, small, large)) == [
        1, worker_count, 1, worker_count,
    ]


def test_a_texts_vector_is_the_same_on_one_thread_as_in_a_large_batch(
    embed: Callable[[list[str]], list[list[float]]],
) -> None:
    from examples import _embedder

    texts = [f"sentence number {i} about batching" for i in range(_embedder.ONE_THREAD_UP_TO + 4)]
    alone = on_a_new_thread(lambda: [embed([text])[0] for text in texts])
    together = on_a_new_thread(lambda: embed(texts))
    assert isinstance(alone, list) and isinstance(together, list)
    for one, batched in zip(alone, together, strict=True):
        assert one == pytest.approx(batched, abs=1e-5)
