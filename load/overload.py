"""Overload: the demo service with admission by predicted wait (``max_queue_delay_ms``) against without.

Run from the repository root::

    .venv/bin/python load/overload.py                      # 300 users, 30 s per setting and user kind
    .venv/bin/python load/overload.py --users 500 --duration 60 --user PoliteUser

Two Starlette servers on loopback, each one uvicorn process with the real model: ``bounded`` (the
demo's ``max_queue_delay_ms=1000``) and ``unbounded`` (``EMBED_MAX_QUEUE_DELAY_MS=off``: only
``max_queue_size=2048`` sheds). Locust users (one text a request, no think time, each response
checked; ``load/locust_overload.py``) drive each far past its capacity, the steps alternating
between the two servers so both share the machine's drift: ``PoliteUser`` waits a 503's
Retry-After before its next request, as a well-behaved client does; ``ImpatientUser`` retries at
once, the harshest client, whose refusals themselves load the server's event loop (and the load
generator shares the machine's cores). Per step it prints the accepted requests (200) per second,
their end-to-end latency percentiles, the refusals (503 + Retry-After) per second and the batcher's
own queue-wait p99: the claim under test is that the accepted requests' p99 stays within about
twice the bound when it is on. Outputs go to ``load/results/overload-<time>/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import compare
from compare import LOAD, http_json, serving, wait_healthy, warm_up
from outcomes import ACCEPTED, SHED
from steps import percentile

ENV = "EMBED_MAX_QUEUE_DELAY_MS"  # examples._api.MAX_QUEUE_DELAY_MS_ENV
SETTINGS = {"bounded": None, "unbounded": "off"}  # EMBED_MAX_QUEUE_DELAY_MS for each server (None: the demo's)
BOUND_MS = 1000.0  # examples._api.MAX_QUEUE_DELAY_MS
USERS = ("PoliteUser", "ImpatientUser")


def run_locust(url: str, user: str, users: int, seconds: float, prefix: Path) -> dict[str, Any]:
    """One headless Locust run of ``user`` (from ``locust_overload.py``); the measurement window's records."""
    return compare.run_locust(url, [user], users, seconds, prefix, locustfile="locust_overload.py")


def summary(name: str, user: str, results: dict[str, Any], queue_wait_p99: float) -> dict[str, Any]:
    start, end = results["window"]
    records = results["records"]  # [name, start, latency s, texts, outcome]
    accepted = [r[2] * 1000 for r in records if r[4] == ACCEPTED]
    refused = sum(1 for r in records if r[4] == SHED)
    other = len(records) - len(accepted) - refused
    seconds = end - start
    return {
        "setting": name, "user": user, "queue_p99": queue_wait_p99 * 1000, "accepted/s": len(accepted) / seconds,
        "refused/s": refused / seconds, "other": other,
        "p50": percentile(accepted, 0.50), "p95": percentile(accepted, 0.95), "p99": percentile(accepted, 0.99),
        "max": max(accepted, default=float("nan")),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--rounds", type=int, default=1, help="bounded/unbounded pairs per user kind, alternated")
    parser.add_argument("--user", choices=USERS, action="append",
                        help="PoliteUser honours Retry-After, ImpatientUser retries at once (default: both)")
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
        for user in args.user or USERS:
            for round_ in range(args.rounds):
                for name, url in urls.items():
                    print(f"{user} round {round_ + 1}: {name}, {args.users} users, {args.duration:g} s ...",
                          file=sys.stderr)
                    results = run_locust(url, user, args.users, args.duration, out / f"{name}-{user}-{round_ + 1}")
                    queue_p99 = http_json(f"{url}/stats")["batchers"]["embed"]["queue_wait_p99"]
                    rows.append(summary(name, user, results, queue_p99))
    if inherited is not None:
        os.environ[ENV] = inherited

    print(f"\nOverload: {args.users} closed-loop users (no think time), Starlette + uvicorn, 1 process; "
          f"bound {BOUND_MS:g} ms; machine shared with other work")
    print(f"{'user':<16} {'setting':<10} {'accepted/s':>10} {'refused/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'p99/bound':>9} {'queue p99':>9} {'other':>6}")
    for row in rows:
        print(f"{row['user']:<16} {row['setting']:<10} {row['accepted/s']:>10.1f} {row['refused/s']:>10.1f} "
              f"{row['p50']:>8.0f} {row['p95']:>8.0f} {row['p99']:>8.0f} {row['max']:>8.0f} "
              f"{row['p99'] / BOUND_MS:>9.2f} {row['queue_p99']:>9.0f} {row['other']:>6}")
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
