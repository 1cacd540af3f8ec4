"""Measure concurrent batches and coalescing on an I/O-bound batch function.

Run from the repository root::

    .venv/bin/python load/bench_concurrency.py              # about 20 seconds
    .venv/bin/python load/bench_concurrency.py --markdown

The batch function awaits 0.1 s per batch and computes nothing: what a batcher in front of a remote
model or another service sees. 64 callers (asyncio tasks on one loop) each make one call, with
``max_batch_size=8``: 8 batches' worth. With one batch in flight (``max_concurrent_batches=1``) they
take 8 x 0.1 s; with 8 in flight, about 0.1 s. A second scenario sends the same 64 calls drawing
from 8 distinct items, with ``coalesce=True``: each distinct item is awaited once. The contenders
take turns over ``--rounds`` rounds, so a noisy neighbour slows them alike; the table shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src")]

from microbatch import Batcher  # noqa: E402

CALLERS = 64
BATCH = 8
AWAIT = 0.1


async def remote(items: list[int]) -> list[int]:
    await asyncio.sleep(AWAIT)  # the model lives elsewhere: this batch only waits for it
    return [x * 2 for x in items]


async def burst(b: Batcher[int, int], distinct: int) -> tuple[float, list[float]]:
    """64 calls at once; the wall time of the burst and each call's latency."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        assert await b.acall(i % distinct) == 2 * (i % distinct)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(CALLERS)))
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    contenders: list[tuple[str, dict[str, Any], int]] = [
        ("max_concurrent_batches=1", {"max_concurrent_batches": 1}, CALLERS),
        ("max_concurrent_batches=8", {"max_concurrent_batches": 8}, CALLERS),
        ("max_concurrent_batches=1, 8 distinct items, coalesce", {"coalesce": True}, BATCH),
        ("max_concurrent_batches=1, 8 distinct items, no coalesce", {}, BATCH),
    ]
    walls: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    p99s: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    batches: dict[str, int] = {}

    async def run() -> None:
        for _ in range(args.rounds):
            for name, options, distinct in contenders:
                async with Batcher(remote, max_batch_size=BATCH, max_wait_ms=0, name="bench", **options) as b:
                    wall, latencies = await burst(b, distinct)
                    walls[name].append(wall)
                    p99s[name].append(sorted(latencies)[int(0.99 * len(latencies)) - 1])
                    batches[name] = b.stats.batches

    asyncio.run(run())
    header = ["scenario (64 callers, max_batch_size=8, 0.1 s await)", "wall s (median)", "p99 ms", "batches",
              "speed-up"]
    base = statistics.median(walls[contenders[0][0]])
    body = [
        [name, f"{statistics.median(walls[name]):.3f}", f"{1000 * statistics.median(p99s[name]):.0f}",
         str(batches[name]), f"{base / statistics.median(walls[name]):.1f}x"]
        for name, _, _ in contenders
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    sep = "|" if args.markdown else " "
    for i, row in enumerate([header, *body]):
        print(sep + sep.join(f" {cell:<{w}} " if j == 0 else f" {cell:>{w}} " for j, (cell, w) in
                             enumerate(zip(row, widths, strict=True))) + sep)
        if i == 0 and args.markdown:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\n{args.rounds} rounds, contenders in turn; medians. The machine may be shared: read ratios.")


if __name__ == "__main__":
    main()
