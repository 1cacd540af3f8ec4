"""Overload: the demo service with admission by predicted wait (``max_queue_delay_ms``) against without.

Run from the repository root::

    .venv/bin/python load/overload.py                      # 300 users, 2 rounds of 30 s per setting
    .venv/bin/python load/overload.py --users 500 --duration 60 --rounds 1

Two Starlette servers on loopback, each one uvicorn process with the real model: ``bounded`` (the
demo's ``max_queue_delay_ms=1000``) and ``unbounded`` (``EMBED_MAX_QUEUE_DELAY_MS=off``: only
``max_queue_size=2048`` sheds). Locust's ``InteractiveUser`` (one text a request, no think time, each
response checked) drives each far past its capacity; the rounds alternate between the two servers
so both share the machine's drift. Per step it prints the accepted requests (200) per second and
their latency percentiles, and the refused ones (503 + Retry-After): the claim under test is that
the accepted requests' p99 stays within about twice the bound when it is on. The users retry at once
after a 503 (they ignore Retry-After), the harshest client. Outputs go to ``load/results/overload-<time>/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from compare import LOAD, percentile, run_locust, serving, wait_healthy, warm_up

ENV = "EMBED_MAX_QUEUE_DELAY_MS"  # examples._api.MAX_QUEUE_DELAY_MS_ENV
SETTINGS = {"bounded": None, "unbounded": "off"}  # EMBED_MAX_QUEUE_DELAY_MS for each server (None: the demo's)
BOUND_MS = 1000.0  # examples._api.MAX_QUEUE_DELAY_MS


def summary(name: str, results: dict[str, Any]) -> dict[str, Any]:
    start, end = results["window"]
    records = results["records"]  # [name, start, latency s, texts, ok]
    accepted = [r[2] * 1000 for r in records if r[4]]
    refused = sum(count for message, count in results["failures"].items() if message.startswith("HTTP 503"))
    other = len(records) - len(accepted) - refused
    seconds = end - start
    return {
        "setting": name, "accepted/s": len(accepted) / seconds, "refused/s": refused / seconds, "other": other,
        "p50": percentile(accepted, 0.50), "p95": percentile(accepted, 0.95), "p99": percentile(accepted, 0.99),
        "max": max(accepted, default=float("nan")),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--rounds", type=int, default=2, help="bounded/unbounded pairs, alternated")
    args = parser.parse_args(argv)

    out = LOAD / "results" / time.strftime("overload-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    inherited = os.environ.pop(ENV, None)
    with ExitStack() as stack:
        servers = {}
        for name, value in SETTINGS.items():  # serving() passes this process's environment on
            if value is not None:
                os.environ[ENV] = value
            servers[name] = stack.enter_context(serving("starlette", "uvicorn", "batched", 1, out / f"{name}.log"))
            os.environ.pop(ENV, None)
        urls = {name: wait_healthy(server) for name, server in servers.items()}
        for url in urls.values():
            warm_up(url)
        for round_ in range(args.rounds):
            for name, url in urls.items():
                print(f"round {round_ + 1}: {name}, {args.users} users, {args.duration:g} s ...", file=sys.stderr)
                results = run_locust(url, ["InteractiveUser"], args.users, args.duration,
                                     out / f"{name}-{round_ + 1}")
                rows.append(summary(name, results))
    if inherited is not None:
        os.environ[ENV] = inherited

    print(f"\nOverload: {args.users} closed-loop users (no think time), Starlette + uvicorn, 1 process; "
          f"bound {BOUND_MS:g} ms; machine shared with other work")
    print(f"{'setting':<10} {'accepted/s':>10} {'refused/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'p99/bound':>9} {'other':>6}")
    for row in rows:
        print(f"{row['setting']:<10} {row['accepted/s']:>10.1f} {row['refused/s']:>10.1f} {row['p50']:>8.0f} "
              f"{row['p95']:>8.0f} {row['p99']:>8.0f} {row['max']:>8.0f} {row['p99'] / BOUND_MS:>9.2f} "
              f"{row['other']:>6}")
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
