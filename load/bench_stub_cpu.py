"""What each HTTP server costs per request with no model: the model-less stub on uvicorn, gunicorn and waitress.

Run from the repository root::

    .venv/bin/python load/bench_stub_cpu.py                     # 130 requests/s from 64 users, about 2 minutes
    .venv/bin/python load/bench_stub_cpu.py --rate 60 --seconds 10

Each server serves ``load/stub_app.py`` (the embedding API's shapes, one fixed vector, no model) as
``load/compare.py`` starts it for a step's loaded ceiling: one worker, with a thread per user and
spare for the threaded servers. Locust's ``ConstantRateUser`` sends the same offered rate to each in
turn, and the server process's CPU time (its children included: gunicorn's worker) and Locust's are
read from ``/proc`` over the window. What a server costs here, the model's worker does not get on a
shared machine: this is why ``compare.py``'s loaded ceiling runs the stub on the step's own server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import STUBS, locust_at_rate, serving_stub, wait_healthy  # noqa: E402

USERS = 64


def cpu_seconds(root: int) -> float:
    """User and system CPU seconds of ``root`` and every process below it, from ``/proc``."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=130.0, help="requests/s offered in all (default 130)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per server (default 20)")
    args = parser.parse_args(argv)
    print(f"the stub at {args.rate:g} requests/s from {USERS} users, {args.seconds:g} s a server "
          f"({os.cpu_count()} cores; the machine may be shared)", flush=True)
    print(f"{'server':<10} {'server CPU ms/s':>16} {'ms a request':>13} {'Locust CPU ms/s':>16}")  # per offered
    with tempfile.TemporaryDirectory() as scratch:
        for server in STUBS:
            with serving_stub(server, USERS + 16, Path(scratch) / f"{server}.log") as stub:
                url = wait_healthy(stub)
                log = Path(scratch) / f"locust-{server}.log"
                with locust_at_rate(url, USERS, args.rate, args.seconds + 30, log) as locust:
                    before = cpu_seconds(stub.process.pid), cpu_seconds(locust.pid), time.monotonic()
                    time.sleep(args.seconds)  # the measured window: CPU is read at both ends
                    after = cpu_seconds(stub.process.pid), cpu_seconds(locust.pid), time.monotonic()
            wall = after[2] - before[2]
            served, client = (after[0] - before[0]) / wall, (after[1] - before[1]) / wall
            print(f"{server:<10} {served * 1000:>16.0f} {served * 1000 / args.rate:>13.2f} {client * 1000:>16.0f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
