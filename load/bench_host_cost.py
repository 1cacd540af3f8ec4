"""The model host's CPU per item: this checkout's host against another checkout's, in alternating rounds.

Run from the repository root, with the other checkout beside it (a git worktree of main, say)::

    git worktree add --detach ../base main
    .venv/bin/python load/bench_host_cost.py ../base            # 4 rounds, about 4 minutes on 2 cores
    .venv/bin/python load/bench_host_cost.py ../base --rounds 2 --window 4

Each round starts a redis-server and a host (``load.bench_remote:noop``, ``--max-batch-size 64``)
from each checkout in turn (the order alternates) and drives it as ``bench_remote.py`` does: 4
client processes (always this checkout's client) with 16 callers each, threads then asyncio tasks,
closed loop. On a machine shared with other work wall-clock figures swing; CPU per item (CPU seconds
a process used in the window over the items completed) is steadier, and the medians over the rounds
are printed side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_remote import ROOT, Stack, throughput  # noqa: E402 - the load directory is put on the path first

KINDS = ("threads", "asyncio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="the other checkout (its src/ and load/ are used for its host)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=6.0, help="seconds of load per row")
    args = parser.parse_args()
    trees = {"this checkout": ROOT, f"baseline ({args.baseline})": args.baseline.resolve()}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
        for label, root in order:
            stack = Stack(root=root)
            try:
                for kind in KINDS:
                    run = throughput(stack, kind, args.window)
                    runs.setdefault((label, kind), []).append(run)
                    print(f"round {round_ + 1}, {label}, {kind}: {run['items_per_s']:,.0f} items/s, host "
                          f"{run['host_cpu'] / run['items_per_s'] * 1e6:.1f} µs/item", flush=True)
            finally:
                stack.close()

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(row[key] / row["items_per_s"] * 1e6 for row in rows))

    print(f"\nmedians over {args.rounds} rounds of {args.window:g} s; CPU per item in µs\n")
    print("| callers | host from | items/s | host | redis-server | clients | all |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        for label in trees:
            rows = runs[(label, kind)]
            total = statistics.median((r["host_cpu"] + r["redis_cpu"] + r["clients_cpu"]) / r["items_per_s"] * 1e6
                                      for r in rows)
            print(f"| {kind} | {label} | {statistics.median(r['items_per_s'] for r in rows):,.0f} "
                  f"| {median(rows, 'host_cpu'):.1f} | {median(rows, 'redis_cpu'):.1f} "
                  f"| {median(rows, 'clients_cpu'):.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
