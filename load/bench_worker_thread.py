"""Measure MiniLM inline (on the main thread) against on a worker thread, quiet and beside a busy core.

Run from the repository root::

    .venv/bin/python load/bench_worker_thread.py            # about 9 minutes on 2 cores
    .venv/bin/python load/bench_worker_thread.py --quick    # about 3 minutes
    .venv/bin/python load/bench_worker_thread.py --markdown

Why: a batcher's worker is a thread Python started, and torch's OpenMP thread count is per thread:
``torch.set_num_threads`` sets the calling thread's team, and a thread that never calls it runs on
the default torch holds when the thread first uses it. The CPU-seconds column shows how many
threads did the work. A team of 2 is faster on idle cores at large batches, slower for a handful
of texts (too little to split: the second thread only adds a hand-off at each parallel region),
and collapses when another process takes a core (its threads wait at every barrier for a
descheduled peer).

Each setting runs in a fresh process (``OMP_WAIT_POLICY`` is read once, when OpenMP starts), once
quiet and once beside a competing process that keeps one core busy, alternating, and within a
process every setup takes one call in turn, so drift on a shared machine lands on all alike:

* ``inline``: the main thread calls the model.
* ``worker``: a plain worker thread (what a Batcher's worker is without ``on_worker_start``).
* ``worker, N threads``: the worker calls ``torch.set_num_threads(N)`` first (``on_worker_start``).
* ``worker, by call size``: the examples' batch function (``examples._embedder.embed_texts``), which
  sets one thread for a call of at most 4 texts and the worker's count beyond (``threads_for``).

The other setups call the model's own ``encode``, so only their setup decides their threads.

Columns: the p50 of a lone call after a 22 ms pause (a lone request's view) at batch 1, 4, 8 and 32;
texts/s at batch 32 back to back (the ceiling's view); CPU seconds per second of that run (threads
doing work, or spinning).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "load"))

from corpus import sentences  # noqa: E402

SIZES = (1, 4, 8, 32)
PAUSE = 0.022
POLICIES = ("default", "PASSIVE")


# ------------------------------------------------------------------------------------- the child


class Worker:
    """A thread that runs the model when asked, after ``setup``: the shape of a Batcher's worker."""

    def __init__(self, call: Callable[[list[str]], Any], setup: Callable[[], None] | None) -> None:
        self._call = call
        self._jobs: SimpleQueue[list[str]] = SimpleQueue()
        self._done: SimpleQueue[float] = SimpleQueue()
        threading.Thread(target=self._run, args=(setup,), daemon=True, name="worker").start()

    def _run(self, setup: Callable[[], None] | None) -> None:
        if setup is not None:
            setup()
        while True:
            texts = self._jobs.get()
            started = time.perf_counter()
            self._call(texts)
            self._done.put(time.perf_counter() - started)

    def __call__(self, texts: list[str]) -> float:
        self._jobs.put(texts)
        return self._done.get()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def child(samples: int, seconds: float) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    sys.path.insert(0, str(REPO))
    from examples._embedder import embed_texts, load_model

    model = load_model()
    cores = torch.get_num_threads()

    def encode(batch: list[str]) -> Any:
        return model.encode(batch, batch_size=len(batch), show_progress_bar=False)

    texts = sentences(32 * 16, seed=3)
    batches = {n: [texts[i:i + n] for i in range(0, len(texts) - n + 1, n)] for n in SIZES}

    def inline(batch: list[str]) -> float:
        started = time.perf_counter()
        encode(batch)
        return time.perf_counter() - started

    makers: dict[str, Callable[[], Callable[[list[str]], float]]] = {
        "inline": lambda: inline,
        "worker": lambda: Worker(encode, None),
        f"worker, {cores} threads": lambda: Worker(encode, lambda: torch.set_num_threads(cores)),
        "worker, 1 thread": lambda: Worker(encode, lambda: torch.set_num_threads(1)),
        "worker, by call size": lambda: Worker(embed_texts, lambda: torch.set_num_threads(cores)),
    }
    setups: dict[str, Callable[[list[str]], float]] = {}
    for name, make in makers.items():
        # One at a time, each warmed before the next starts: a thread takes torch's process-wide
        # default at its first call, and set_num_threads(1) on one worker changes that default.
        run = setups[name] = make()
        run(batches[32][0])
        run(batches[1][0])
    lone: dict[tuple[str, int], list[float]] = {(name, n): [] for name in setups for n in SIZES}
    for i in range(samples):
        for n in SIZES:
            for name, run in setups.items():
                time.sleep(PAUSE)  # the pause a lone caller leaves between calls
                lone[name, n].append(run(batches[n][i % len(batches[n])]))
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for _ in range(3):
        for name, run in setups.items():
            done, cpu0, started = 0, _cpu_seconds(), time.perf_counter()
            while time.perf_counter() - started < seconds / 3:
                run(batches[32][done % len(batches[32])])
                done += 1
            wall = time.perf_counter() - started
            rates[name].append((done * 32 / wall, (_cpu_seconds() - cpu0) / wall))
    for name in setups:
        print(json.dumps({
            "setup": name,
            "lone_ms": {n: statistics.median(lone[name, n]) * 1000 for n in SIZES},
            "rate": sum(r for r, _ in rates[name]) / len(rates[name]),
            "cpu": sum(c for _, c in rates[name]) / len(rates[name]),
        }), flush=True)


# ------------------------------------------------------------------------------------- the parent


def run_child(policy: str, busy: bool, samples: int, seconds: float) -> list[dict[str, Any]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    load = None
    if busy:
        load = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: pass"])
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--samples", str(samples), "--seconds",
                              str(seconds)], env=env, capture_output=True, text=True, check=True, timeout=900)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help="lone calls per setup and batch size (default 30, quick 10)")
    parser.add_argument("--seconds", type=float, help="back-to-back time per setup (default 6, quick 3)")
    args = parser.parse_args(argv)
    samples = args.samples or (10 if args.quick else 30)
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    if args.child:
        child(samples, seconds)
        return 0
    print(f"MiniLM inline vs on a worker thread, {os.cpu_count()} cores (the machine may be shared: "
          "compare within a block)", file=sys.stderr)
    header = ["load", "OMP_WAIT_POLICY", "setup", *(f"lone b{n} p50 ms" for n in SIZES), "b32 texts/s",
              "vs inline", "CPU s/s"]
    rows: list[list[str]] = []
    for busy in (False, True):
        for policy in POLICIES:
            print(f"  {'busy core' if busy else 'quiet'}, OMP_WAIT_POLICY={policy}...", file=sys.stderr, flush=True)
            results = run_child(policy, busy, samples, seconds)
            base = results[0]["rate"]
            for r in results:
                rows.append(["busy core" if busy else "quiet", policy, r["setup"],
                             *(f"{r['lone_ms'][str(n)]:.1f}" for n in SIZES), f"{r['rate']:.0f}",
                             f"{r['rate'] / base:.2f}", f"{r['cpu']:.2f}"])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            cells = (c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            print("  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
