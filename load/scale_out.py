"""Scale-out: several web worker processes sharing one model host through microbatch.remote, against a
model in every worker. The real all-MiniLM-L6-v2, 64 Locust users sending one text each, every row
in one run on this machine.

Run from the repository root (``bash scripts/demo.sh --scale-out`` installs redis-server and runs this)::

    .venv/bin/python load/scale_out.py                  # about 5 minutes on 2 cores
    .venv/bin/python load/scale_out.py --duration 10    # shorter windows

It starts its own redis-server (a free port, a temporary directory, no persistence) and, row by row:

1. Flask under gunicorn ``gthread``, ``-w 1``, the model in the worker (the single-process baseline);
2. the same with ``-w 4``: four model copies, batches split four ways;
3. ``-w 4`` with ``MICROBATCH_REMOTE`` set and one host,
   ``microbatch serve examples._embedder:embed_texts --name embed --max-batch-size 32``: one model;
4. Starlette under ``uvicorn --workers 4`` with the same host.

Columns: texts/s and p50/p99 latency over the requests that passed Locust's checks (each vector is
checked against a reference), failed requests, the mean batch size at the model (over the window,
from every worker's or the host's stats), and the total RSS of every process of the row (web
workers, their master, and for the remote rows the host and redis-server). Then the kill test:
under load on row 3's setup, the host is killed with SIGKILL, a new one is started, and every
request that did not get a correct answer counts as lost (its entries are claimed by the new host
after ``--claim-idle`` seconds). Every process it starts is stopped, whatever happens.
The table, a plot of the rows side by side (``scale-out.png``), Locust's records and the logs go to
``load/results/scale-out-*/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "load"))

from compare import (  # noqa: E402 - the load directory is put on the path first
    START_TIMEOUT,
    Server,
    free_port,
    http_json,
    run_locust,
    stop,
    warm_up,
)
from steps import Step, summarise  # noqa: E402

USERS = 64
HOST_COMMAND = ["-m", "microbatch", "serve", "examples._embedder:embed_texts", "--name", "embed",
                "--max-batch-size", "32", "--log-level", "WARNING"]


@dataclass(frozen=True)
class Row:
    label: str
    framework: str  # "flask" (gunicorn gthread) or "starlette" (uvicorn)
    workers: int
    remote: bool


ROWS = (
    Row("Flask, gunicorn gthread -w 1, model in the worker", "flask", 1, False),
    Row("Flask, gunicorn gthread -w 4, a model in each worker", "flask", 4, False),
    Row("Flask, gunicorn gthread -w 4 + one host", "flask", 4, True),
    Row("Starlette, uvicorn --workers 4 + one host", "starlette", 4, True),
)


@dataclass
class Result:
    row: Row
    step: Step
    mean_batch: float | None
    model_ms: float  # mean model time per batch
    rss_mb: float


def env_for(remote: str | None) -> dict[str, str]:
    paths = [str(REPO / "src"), str(REPO / "adapters"), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "MICROBATCH_MODE": "batched", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    env.pop("MICROBATCH_REMOTE", None)
    if remote is not None:
        env["MICROBATCH_REMOTE"] = remote
    return env


# ------------------------------------------------------------------------------------------ processes


@contextmanager
def redis_server(directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run scripts/env.sh (or: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--loglevel", "warning"], stdout=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)  # polling a starting process: nothing to wait on but time
    client.close()
    try:
        yield url, process
    finally:
        stop(process)


@contextmanager
def model_host(url: str, log: Path, claim_idle: float) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "a") as out:
        process = subprocess.Popen(
            [sys.executable, *HOST_COMMAND, "--url", url, "--claim-idle", f"{claim_idle:g}"], cwd=REPO,
            env=env_for(None), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def server_command(row: Row, port: int) -> list[str]:
    if row.framework == "flask":
        return [sys.executable, "-m", "gunicorn", "--workers", str(row.workers), "--worker-class", "gthread",
                "--threads", str(USERS), "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning",
                "examples.flask_app:app"]
    return [sys.executable, "-m", "uvicorn", "examples.starlette_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(row.workers), "--log-level", "warning", "--no-access-log"]


@contextmanager
def web_server(row: Row, remote: str | None, log: Path) -> Iterator[Server]:
    port = free_port()
    with open(log, "a") as out:
        process = subprocess.Popen(server_command(row, port), cwd=REPO, env=env_for(remote), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)


def worker_stats(server: Server, workers: int) -> dict[int, dict[str, Any]]:
    """Once ``workers`` worker processes have answered (their model loaded), each one's batcher stats, by pid."""
    deadline = time.monotonic() + START_TIMEOUT
    seen: dict[int, dict[str, Any]] = {}
    while len(seen) < workers:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.process.returncode}; see {server.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered within {START_TIMEOUT:.0f}s")
        try:
            body = http_json(f"{server.url}/stats", timeout=5)
            seen[int(body["pid"])] = body["batchers"]["embed"]
        except (OSError, ValueError):
            time.sleep(0.25)  # polling a starting process: nothing to wait on but time
    return seen


def at_the_model(before: dict[Any, dict[str, Any]], after: dict[Any, dict[str, Any]]) -> tuple[float | None, float]:
    """Mean batch size over the window, and the mean model time per batch in ms, over every model copy."""
    items = batches = 0
    seconds = 0.0
    for key, stats in after.items():
        earlier = before.get(key, {"batch_sizes": {}, "run_time": {"sum": 0.0}})
        for size, n in stats["batch_sizes"].items():
            delta = n - earlier["batch_sizes"].get(size, 0)
            items += int(size) * delta
            batches += delta
        seconds += stats["run_time"]["sum"] - earlier["run_time"]["sum"]
    return (items / batches if batches else None), (1000 * seconds / batches if batches else float("nan"))


def tree_rss_mb(roots: list[int]) -> float:
    """Resident memory of ``roots`` and all their descendants, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total_kb, todo, done = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in done:
            continue
        done.add(pid)
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


# ------------------------------------------------------------------------------------------ steps


def measure_row(row: Row, url: str | None, redis_pid: int, out: Path, seconds: float, claim_idle: float) -> Result:
    print(f"  {row.label}: starting", file=sys.stderr, flush=True)
    with ExitStack() as stack:
        roots = []
        remote = None
        if row.remote:
            assert url is not None
            host = stack.enter_context(model_host(url, out / "host.log", claim_idle))
            roots += [host.pid, redis_pid]
            remote = url
        server = stack.enter_context(web_server(row, remote, out / f"{row.framework}-{row.workers}.log"))
        roots.append(server.process.pid)
        worker_stats(server, row.workers)
        warm_up(server.url)
        copies = 1 if row.remote else row.workers  # remote: every worker shows the host's stats
        before = worker_stats(server, copies)
        results = run_locust(server.url, ["InteractiveUser"], USERS, seconds, out / f"row-{ROWS.index(row) + 1}")
        rss = tree_rss_mb(roots)
        if row.remote:
            time.sleep(1.2)  # the host publishes its stats every second: let the last ones land
            before, after = {0: next(iter(before.values()))}, {0: next(iter(worker_stats(server, 1).values()))}
        else:
            after = worker_stats(server, copies)
        step = summarise(results, "closed", USERS, "remote" if row.remote else "in-process")
        batch, model_ms = at_the_model(before, after)
        return Result(row, step, batch, model_ms, rss)


def kill_test(url: str, out: Path, seconds: float, claim_idle: float) -> dict[str, Any]:
    """Row 3's setup under load: SIGKILL the host mid-run, start another; requests that failed are lost."""
    row = ROWS[2]
    print("  kill test: starting", file=sys.stderr, flush=True)
    with ExitStack() as stack:
        first = stack.enter_context(model_host(url, out / "host-killed.log", claim_idle))
        server = stack.enter_context(web_server(row, url, out / "flask-4-kill.log"))
        worker_stats(server, row.workers)
        warm_up(server.url)
        box: dict[str, Any] = {}
        load = threading.Thread(target=lambda: box.update(results=run_locust(
            server.url, ["InteractiveUser"], USERS, seconds, out / "kill-test")))
        started = completed(server)
        load.start()
        while completed(server) < started + 4 * USERS and load.is_alive():  # the load is flowing
            time.sleep(0.2)  # polling another process's counters
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        stack.enter_context(model_host(url, out / "host-replacement.log", claim_idle))
        load.join(seconds + 180)
        recovered = time.monotonic() - killed_at
        hosts = http_json(f"{server.url}/stats")["batchers"]["embed"]["hosts"]
        step = summarise(box["results"], "kill", USERS, "remote")
        # Here a shed request (503 + Retry-After) is lost too: every request without a correct answer is.
        return {"requests": step.requests, "lost": step.failures + step.shed,
                "claimed": sum(h["claimed"] for h in hosts.values()), "p99_ms": step.p99_ms,
                "seconds": step.seconds, "recovered_s": recovered}


def completed(server: Server) -> int:
    """Items the live hosts completed, as their last reports say (read through any web worker)."""
    return int(http_json(f"{server.url}/stats")["batchers"]["embed"]["completed"])


# ------------------------------------------------------------------------------------------ report


def report(results: list[Result], kill: dict[str, Any] | None) -> str:
    lines = [
        f"\nScale-out: the real model, {USERS} users sending one text each; one run, "
        f"{os.cpu_count()} cores shared with other work\n",
        "| setup | texts/s | p50 ms | p99 ms | failed | mean batch at the model | model ms per batch "
        "| total RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        batch = "-" if r.mean_batch is None else f"{r.mean_batch:.1f}"
        lines.append(f"| {r.row.label} | {r.step.texts_per_s:.0f} | {r.step.p50_ms:.0f} | {r.step.p99_ms:.0f} | "
                     f"{r.step.failures + r.step.shed} | {batch} | {r.model_ms:.0f} | {r.rss_mb:,.0f} |")
    if len(results) == len(ROWS):
        base, inproc, remote = results[0], results[1], results[2]
        ratio = remote.step.texts_per_s / base.step.texts_per_s if base.step.texts_per_s else float("nan")
        tail = remote.step.p99_ms / base.step.p99_ms if base.step.p99_ms else float("nan")
        memory = remote.rss_mb / inproc.rss_mb if inproc.rss_mb else float("nan")
        lines += [
            "",
            f"- -w 4 + host vs -w 1: {ratio:.2f}x the texts/s (target >= 0.95), p99 {tail:.2f}x (target <= 1.2)",
            f"- -w 4 + host vs -w 4 in-process: {memory:.2f}x the RSS (target <= 0.5)",
            f"- mean batch at the host: {remote.mean_batch or 0:.1f} (target >= 24)",
        ]
    if kill is not None:
        lines += [
            "",
            f"Kill test (-w 4 + host, {USERS} users, {kill['seconds']:.0f} s window): the host SIGKILLed once the "
            f"load flowed, a new one started: {kill['requests']} requests answered correctly, {kill['lost']} lost "
            f"(target 0), {kill['claimed']} entries claimed by the new host, p99 {kill['p99_ms']:.0f} ms.",
        ]
    return "\n".join(lines)


SHORT = {  # the plot's bar labels, by row
    ROWS[0]: "Flask -w 1\nmodel in it",
    ROWS[1]: "Flask -w 4\na model each",
    ROWS[2]: "Flask -w 4\n+ one host",
    ROWS[3]: "uvicorn -w 4\n+ one host",
}


def plot(results: list[Result], path: Path) -> None:
    """The rows side by side: texts/s, p99, mean batch at the model and total RSS, one bar per setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [SHORT[r.row] for r in results]
    colours = ["tab:blue" if not r.row.remote else "tab:green" for r in results]
    panels = (
        ("texts per second", [r.step.texts_per_s for r in results]),
        ("p99 latency, ms", [r.step.p99_ms for r in results]),
        ("mean batch at the model", [r.mean_batch or 0.0 for r in results]),
        ("total RSS, MB", [r.rss_mb for r in results]),
    )
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for axis, (title, values) in zip(axes.flat, panels, strict=True):
        bars = axis.bar(range(len(values)), values, color=colours)
        axis.bar_label(bars, fmt="%.0f" if max(values, default=0) >= 100 else "%.1f", fontsize=8)
        axis.set_xticks(range(len(values)), labels, fontsize=8)
        axis.set_title(title)
        axis.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Scale-out: {USERS} users, all-MiniLM-L6-v2 on {os.cpu_count()} CPUs\n"
                 "blue: a model in the web workers; green: one model host through Redis")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per row (default 20)")
    parser.add_argument("--kill-duration", type=float, default=40.0, help="seconds of load in the kill test")
    parser.add_argument("--claim-idle", type=float, default=3.0, help="the hosts' --claim-idle (default 3 s)")
    parser.add_argument("--rows", default="1234", help="which rows to run, e.g. 34 (default: all)")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill test")
    args = parser.parse_args(argv)
    run = time.strftime("scale-out-%Y%m%d-%H%M%S")
    out = REPO / "load" / "results" / run
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    kill = None
    with tempfile.TemporaryDirectory(prefix="mb-scale-out-") as directory, redis_server(Path(directory)) as (url, rd):
        for index, row in enumerate(ROWS, 1):
            if str(index) in args.rows:
                results.append(measure_row(row, url, rd.pid, out, args.duration, args.claim_idle))
        if not args.no_kill:
            kill = kill_test(url, out, args.kill_duration, args.claim_idle)
    text = report(results, kill)
    print(text)
    (out / "table.md").write_text(text + "\n")
    if results:
        plot(results, out / "scale-out.png")
        print(f"plot: {(out / 'scale-out.png').relative_to(REPO)}")
    print(f"\n(logs and Locust records in {out.relative_to(REPO)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
