"""Benchmark microbatch.remote: what going through Redis costs a lone call, and no-op throughput.

Run from the repository root (redis-server must be installed; scripts/env.sh installs it)::

    .venv/bin/python load/bench_remote.py            # about a minute on 2 cores
    .venv/bin/python load/bench_remote.py --quick    # a smoke run

It starts its own redis-server on a free port (no persistence, a temporary directory) and one host,
``python -m microbatch serve load.bench_remote:noop --name bench --max-batch-size 64``, and stops both.

* Lone call: one caller thread, one call at a time, a no-op batch function. An in-process
  ``Batcher`` and a ``RemoteBatcher`` alternate in rounds, so a burst of other work on a shared
  machine lands on both alike; p50/p99 are pooled over the rounds. Beside them, in the same rounds, the
  floor: the raw round trip a lone call of this design cannot beat (a client and an echo process
  talking through a stream and a list, no microbatch), and one PING, the unit it is made of.
* Throughput: 4 client processes with 16 callers each (threads, then asyncio tasks) call one host
  in a closed loop for a fixed window; items/s counts completed calls. The CPU seconds each process
  used in the window say where the time goes (read from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench"
PROCESSES, CALLERS = 4, 16


def noop(items: list[Any]) -> list[Any]:
    """The batch function the host serves: returns its input."""
    return items


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


class Stack:
    """redis-server and one host of ``target`` serving ``name``, started and stopped by PID."""

    def __init__(self, target: str = "load.bench_remote:noop", name: str = NAME,
                 flags: tuple[str, ...] | list[str] = ("--max-batch-size", "64"), root: Path = ROOT) -> None:
        self.dir = tempfile.mkdtemp(prefix="mb-bench-")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed: run scripts/env.sh (or apt-get install redis-server)")
        self.redis = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
                                      stdout=subprocess.DEVNULL)
        path = os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        self.host = subprocess.Popen([sys.executable, "-m", "microbatch", "serve", target, "--url", self.url,
                                      "--name", name, *flags, "--log-level", "WARNING"], cwd=root, env=env)
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:  # wait for the host's first report (bounded)
            try:
                if client.hlen(f"microbatch:{name}:hosts"):
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline or self.host.poll() is not None:
                self.close()
                raise SystemExit("the host did not start")
            threading.Event().wait(0.01)
        client.close()

    def close(self) -> None:
        for process in (self.host, self.redis):
            process.terminate()
            process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_echo(url: str) -> None:
    """The floor: a consumer process that answers each stream entry with one RPUSH, no microbatch involved."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=None)
    try:
        r.xgroup_create("raw:requests", "g", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    while True:
        response: Any = r.xreadgroup("g", "c", {"raw:requests": ">"}, count=1, block=0)
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                if fields[b"p"] == b"stop":
                    return
                r.rpush(fields[b"r"], fields[b"p"])
                r.xack("raw:requests", "g", entry_id)


class RawRoundTrip:
    """One call the way the anchors measure a Redis round trip: XADD, (XREADGROUP, RPUSH), BLPOP."""

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url, socket_timeout=None)
        self.process = multiprocessing.get_context("spawn").Process(target=raw_echo, args=(url,))
        self.process.start()

    def __call__(self, item: int) -> Any:
        self.r.xadd("raw:requests", {"r": "raw:reply", "p": str(item)})
        popped: Any = self.r.blpop(["raw:reply"], timeout=30)
        return popped[1]

    def close(self) -> None:
        self.r.xadd("raw:requests", {"r": "raw:reply", "p": "stop"})
        self.process.join(30)


class Ping:
    """One request and its answer on one connection: the unit every hop above is made of."""

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)

    def __call__(self, item: int) -> Any:
        return self.r.ping()

    def close(self) -> None:
        self.r.close()


PING = "one PING round trip (redis-py)"
RAW = "raw Redis round trip (XADD, XREADGROUP, RPUSH, BLPOP)"


def lone_calls(url: str, rounds: int, per_round: int) -> dict[str, list[float]]:
    from microbatch import Batcher
    from microbatch.remote import RemoteBatcher

    local = Batcher(noop, name="local")
    remote: Any = RemoteBatcher(NAME, url=url)
    raw = RawRoundTrip(url)
    ping = Ping(url)
    callers: list[tuple[str, Any]] = [("in-process Batcher", local), ("RemoteBatcher", remote), (RAW, raw),
                                      (PING, ping)]
    times: dict[str, list[float]] = {label: [] for label, _ in callers}
    for _, batcher in callers:
        for i in range(200):  # warm-up
            batcher(i)
    for _ in range(rounds):
        for label, batcher in callers:
            out = times[label]
            for i in range(per_round):
                started = time.perf_counter()
                batcher(i)
                out.append(time.perf_counter() - started)
    local.close()
    remote.close()
    raw.close()
    ping.close()
    return times


def _client(url: str, kind: str, window: float, start_at: float, queue: Any) -> None:
    from microbatch.remote import RemoteBatcher

    rb: Any = RemoteBatcher(NAME, url=url)
    rb("warm")
    stop_at = start_at + window
    counts = [0] * CALLERS

    def thread_caller(k: int) -> None:
        n = 0
        while time.time() < start_at:
            rb(k)
        while time.time() < stop_at:
            rb(k)
            n += 1
        counts[k] = n

    async def task_caller(k: int) -> None:
        n = 0
        while time.time() < start_at:
            await rb.acall(k)
        while time.time() < stop_at:
            await rb.acall(k)
            n += 1
        counts[k] = n

    cpu0 = None
    if kind == "threads":
        threads = [threading.Thread(target=thread_caller, args=(k,)) for k in range(CALLERS)]
        for t in threads:
            t.start()
        threading.Event().wait(max(0.0, start_at - time.time()))
        cpu0 = time.process_time()
        for t in threads:
            t.join()
    else:
        async def main() -> None:
            await asyncio.gather(*(task_caller(k) for k in range(CALLERS)))

        cpu0 = time.process_time()  # includes a little warm-up; the window dominates
        asyncio.run(main())
    cpu = time.process_time() - cpu0
    stats = rb.client_stats()
    rb.close()
    queue.put({"items": sum(counts), "cpu": cpu, "p50": stats.round_trip_p50, "p99": stats.round_trip_p99})


def throughput(stack: Stack, kind: str, window: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # every process is connected and warm by then
    procs = [ctx.Process(target=_client, args=(stack.url, kind, window, start_at, queue)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    threading.Event().wait(max(0.0, start_at - time.time()))
    host0, redis0 = _cpu_seconds(stack.host.pid), _cpu_seconds(stack.redis.pid)
    threading.Event().wait(window)
    host_cpu, redis_cpu = _cpu_seconds(stack.host.pid) - host0, _cpu_seconds(stack.redis.pid) - redis0
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    items = sum(r["items"] for r in results)
    return {
        "kind": kind, "items_per_s": items / window, "p50": statistics.median(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results), "host_cpu": host_cpu / window, "redis_cpu": redis_cpu / window,
        "clients_cpu": sum(r["cpu"] for r in results) / window, "items": items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    rounds, per_round, window = (4, 250, 3.0) if args.quick else (10, 500, 8.0)
    stack = Stack()
    try:
        lone = lone_calls(stack.url, rounds, per_round)
        runs = [throughput(stack, kind, window) for kind in ("threads", "asyncio")]
    finally:
        stack.close()
    print(f"\nmicrobatch.remote, one host, no-op batch function; {os.cpu_count()} cores shared with other work\n")
    print("| lone call, one caller | p50 | p99 |")
    print("|---|---:|---:|")
    for label, values in lone.items():
        print(f"| {label} | {_percentile(values, 0.5) * 1e3:.3f} ms | {_percentile(values, 0.99) * 1e3:.3f} ms |")
    added = _percentile(lone["RemoteBatcher"], 0.5) - _percentile(lone["in-process Batcher"], 0.5)
    floor = _percentile(lone[RAW], 0.5) - _percentile(lone["in-process Batcher"], 0.5)
    print(f"| added by Redis (p50 difference; target <= 0.5 ms) | {added * 1e3:.3f} ms | |")
    print(f"| the raw round trip's own p50 over in-process (the floor of this design) | {floor * 1e3:.3f} ms | |\n")
    print(f"| {PROCESSES} processes x {CALLERS} callers | items/s (target >= 20,000) | round trip p50 | p99 "
          "| CPU cores used: host | redis-server | clients |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['kind']} | {run['items_per_s']:,.0f} | {run['p50'] * 1e3:.2f} ms | {run['p99'] * 1e3:.2f} ms "
              f"| {run['host_cpu']:.2f} | {run['redis_cpu']:.2f} | {run['clients_cpu']:.2f} |")
    print(json.dumps({"lone_added_ms": added * 1e3, "raw_floor_ms": floor * 1e3, "throughput": runs}),
          file=sys.stderr)


if __name__ == "__main__":
    main()
