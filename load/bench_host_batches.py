"""Batch sizes at a model host against an in-process Batcher under the same closed-loop callers.

Run from the repository root (redis-server must be installed; scripts/env.sh installs it)::

    .venv/bin/python load/bench_host_batches.py           # about a minute and a half on 2 cores
    .venv/bin/python load/bench_host_batches.py --quick   # a smoke run

No HTTP and no model: the batch function sleeps a fixed time per batch (``time.sleep`` releases the
GIL, so the callers are never starved of CPU by it) with ``max_batch_size=32``, so the batch sizes
depend only on how calls reach the worker. 64 callers call it in a closed loop:

* in-process: one process, 64 threads, one ``Batcher`` (gunicorn ``-w 1`` with 64 threads);
* remote: 4 processes x 16 threads, each process with a ``RemoteBatcher``, and one host
  (``python -m microbatch serve load.bench_host_batches:sleep_<ms>ms --max-batch-size 32``).

With 64 callers and batches of at most 32, the worker can always find 32 items waiting: the mean
batch should be 32 in both, and items/s ``32 / sleep``. The mean batch is read from the batcher's
stats (the host's published stats for the remote rows) over the window only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_remote import Stack  # noqa: E402 - the load directory is put on the path first

CALLERS, PROCESSES, MAX_BATCH = 64, 4, 32
SLEEPS_MS = (100, 20)


def _sleeper(ms: int) -> Any:
    def batch_fn(items: list[Any]) -> list[Any]:
        time.sleep(ms / 1000)
        return items

    batch_fn.__name__ = f"sleep_{ms}ms"
    return batch_fn


sleep_100ms = _sleeper(100)  # the host's targets: load.bench_host_batches:sleep_100ms
sleep_20ms = _sleeper(20)


def _closed_loop(call: Any, callers: int, start_at: float, stop_at: float) -> int:
    counts = [0] * callers

    def caller(k: int) -> None:
        while time.time() < start_at:
            call(k)
        n = 0
        while time.time() < stop_at:
            call(k)
            n += 1
        counts[k] = n

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def in_process(ms: int, warm: float, window: float) -> dict[str, float]:
    from microbatch import Batcher

    b = Batcher(_sleeper(ms), max_batch_size=MAX_BATCH, name="in-process")
    start_at = time.time() + warm
    counts: dict[str, Any] = {}

    def snapshot() -> None:  # the stats at the window's edges, read from a timer
        threading.Event().wait(max(0.0, start_at - time.time()))
        counts["start"] = b.stats
        threading.Event().wait(window)
        counts["stop"] = b.stats

    timer = threading.Thread(target=snapshot)
    timer.start()
    items = _closed_loop(b, CALLERS, start_at, start_at + window)
    timer.join()
    b.close()
    first, last = counts["start"], counts["stop"]
    mean_batch = (last.completed - first.completed) / max(1, last.batches - first.batches)
    return {"items_per_s": items / window, "mean_batch": mean_batch}


def _client(url: str, start_at: float, stop_at: float, queue: Any) -> None:
    from microbatch.remote import RemoteBatcher

    rb: Any = RemoteBatcher("batches", url=url)
    queue.put(_closed_loop(rb, CALLERS // PROCESSES, start_at, stop_at))
    rb.close()


def _host_counts(client: Any) -> tuple[int, int]:
    import msgpack

    completed = batches = 0
    for blob in client.hvals("microbatch:batches:hosts"):
        stats = msgpack.unpackb(blob, raw=False)["stats"]
        completed += stats["completed"]
        batches += stats["batches"]
    return completed, batches


def remote(ms: int, warm: float, window: float) -> dict[str, float]:
    import redis

    stack = Stack(target=f"load.bench_host_batches:sleep_{ms}ms", name="batches",
                  flags=["--max-batch-size", str(MAX_BATCH), "--report-interval", "0.25"])
    try:
        client = redis.Redis.from_url(stack.url)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        start_at = time.time() + warm + 2.0  # the client processes start and connect meanwhile
        procs = [ctx.Process(target=_client, args=(stack.url, start_at, start_at + window, queue))
                 for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        threading.Event().wait(max(0.0, start_at - time.time()) + 0.3)  # a report from inside the window
        first = _host_counts(client)
        threading.Event().wait(window - 0.6)
        last = _host_counts(client)
        items = sum(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(30)
        client.close()
    finally:
        stack.close()
    return {"items_per_s": items / window, "mean_batch": (last[0] - first[0]) / max(1, last[1] - first[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    warm, window = (1.0, 3.0) if args.quick else (2.0, 10.0)
    rows = []
    for ms in SLEEPS_MS:
        rows.append((ms, "in-process Batcher, 1 process x 64 threads", in_process(ms, warm, window)))
        rows.append((ms, f"RemoteBatcher, {PROCESSES} processes x {CALLERS // PROCESSES} threads, one host",
                     remote(ms, warm, window)))
    print(f"\n{CALLERS} closed-loop callers, max_batch_size={MAX_BATCH}, a batch function that sleeps; "
          f"{os.cpu_count()} cores shared with other work\n")
    print("| sleep per batch | setup | items/s (ceiling) | mean batch (target 32) |")
    print("|---:|---|---:|---:|")
    for ms, label, row in rows:
        print(f"| {ms} ms | {label} | {row['items_per_s']:,.0f} ({MAX_BATCH * 1000 / ms:,.0f}) "
              f"| {row['mean_batch']:.1f} |")


if __name__ == "__main__":
    main()
