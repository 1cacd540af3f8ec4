"""Load-test the embedding service batched against itself unbatched, beside the model's offline ceiling.

Run from the repository root::

    .venv/bin/python load/compare.py                          # Starlette + uvicorn, 15 s steps: about 7 minutes
    .venv/bin/python load/compare.py --duration 5             # what scripts/demo.sh runs: about 5 minutes
    .venv/bin/python load/compare.py --quick                  # smoke run, well under a minute
    .venv/bin/python load/compare.py --framework flask        # gunicorn gthread (or --server waitress)
    .venv/bin/python load/compare.py --framework django       # uvicorn + ASGI (or --server gunicorn: WSGI)
    .venv/bin/python load/compare.py --framework all --users 1,64 --mixed-users 0 --rate-users 0
                                    # the three servers in turn in one run, compared at the end

Everything happens in one run, so every number shares the machine's state of the moment (other work
on the machine shows up as noise: compare within a run, not across runs). It takes about a minute to
start the servers, then per step twice ``--duration`` (both modes) plus about 40 s of ceilings and
Locust start-ups; 6 steps by default (4 user counts, mixed, constant rate). Measured on the shared,
loaded 2-core machine: ``--duration 5 --users 1,64`` (4 steps) took 242 s.

1. **Offline ceiling**: the model encodes batches of 32 corpus sentences back to back in this
   process, no server: the most texts per second this machine can embed. Measured between every
   two steps, so each step is compared with the mean of the ceilings measured just before and just
   after it (``of ceiling``); and, for each batched step, measured again while Locust drives a
   model-less stand-in (``load/stub_app.py``) at the rate that step reached (``loaded ceiling``),
   served by the step's own HTTP server with the same settings (uvicorn, or gunicorn ``gthread`` or
   waitress with as many threads): what the machine has left for the model beside the load
   generator and that server's request handling. ``of loaded`` is the step's share of that; the
   gap between ``of ceiling`` and ``of loaded`` is the machine's (the client's and the HTTP
   server's CPU), the rest the app's: the framework, the batcher and the model beside them.
2. **Servers**: the same app started twice, ``MICROBATCH_MODE=batched`` and ``unbatched``, each one
   process with one worker (uvicorn; gunicorn ``gthread`` or waitress with enough threads for every
   user), on loopback. Both run for the whole comparison (an idle one costs nothing), so the two
   modes' runs can alternate and share the machine's drift. Each is warmed up first.
3. **Closed-loop sweep**: Locust ``InteractiveUser`` (one text per request, no think time) at each
   user count, both modes, a fixed time each, split into ``--rounds`` runs (default: one per 5 s,
   at most 3) that the modes take in turn, ABBA (batched, unbatched, unbatched, batched, ...): a
   drift of the machine's speed within a step lands on both modes alike, and each mode's rounds are
   pooled. Throughput counts the texts of the accepted requests: those that passed Locust's checks
   and completed inside a run's window (all users spawned -> end); latency percentiles are over
   those requests, unrounded. A request the server sheds (503 with ``Retry-After``: the batched
   service's queue is full or its predicted wait passes ``max_queue_delay_ms``) is counted as
   ``shed``, not as a failure, and its user waits the Retry-After before its next request, as a
   well-behaved client does; a 503 without ``Retry-After``, and any other error or failed check, is
   a failure (``outcomes.py``).
4. **Mixed**: ``InteractiveUser`` and ``BulkUser`` (16-64 texts a request) at 3:1.
5. **Constant rate**: ``ConstantRateUser`` at a fixed offered rate (default half the first ceiling
   measurement), so the tail latency of a server that cannot keep up is not hidden by a closed loop
   sending it less.

It prints the table (texts/s, requests/s, p50/p95/p99, failures, shed requests, mean batch size,
batched over unbatched, share of the ceiling) and the issue's targets as measured (reported, not asserted), and
writes CSVs, Locust's own CSVs, the raw request records, server logs and a PNG plot into
``load/results/<run>/`` (gitignored). Every step is bounded in time and the servers are always stopped.
With several ``--framework``s, each runs all its steps in turn (its own servers, ceilings, table and
plot, in a folder of the run's), and the run ends with the servers side by side at the largest user
count: each one's share of its loaded ceiling, and Django's texts/s over Flask's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOAD = REPO / "load"
sys.path.insert(0, str(LOAD))

from corpus import sentences  # noqa: E402
from steps import Step, across, fmt, mean_batch, notes, plot, pooled, summarise, table, write_csv  # noqa: E402

MODES = ("batched", "unbatched")
APPS = {
    ("starlette", "uvicorn"): "examples.starlette_app:app",
    ("flask", "gunicorn"): "examples.flask_app:app",
    ("flask", "waitress"): "examples.flask_app:app",
    ("django", "uvicorn"): "examples.django_app.asgi:application",
    ("django", "gunicorn"): "examples.django_app.wsgi:application",
    ("django", "waitress"): "examples.django_app.wsgi:application",
}
DEFAULT_SERVER = {"starlette": "uvicorn", "flask": "gunicorn", "django": "uvicorn"}
CEILING_BATCH = 32
START_TIMEOUT = 240.0  # loading torch and the model on a busy 2-core machine


# ------------------------------------------------------------------------------------------ ceiling


def ceiling_beside_load(stub_url: str, users: int, requests_per_s: float, seconds: float, out: Path) -> float:
    """The offline ceiling measured while Locust sends the model-less stub ``requests_per_s`` requests/s."""
    with locust_at_rate(stub_url, users, requests_per_s, seconds + 30, out / f"stub-{users}u.log"):
        return measure_ceiling(seconds)


@contextmanager
def locust_at_rate(
    url: str, users: int, requests_per_s: float, seconds: float, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Locust's ``ConstantRateUser`` sending ``requests_per_s`` in all to ``url`` (for at most ``seconds``),
    its users spawned, for the block (which gets the Locust process); stopped on leaving."""
    command = [
        sys.executable, "-m", "locust", "-f", str(LOAD / "locustfile.py"), "--headless", "--only-summary",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds:g}s", "--host", url,
        "--loglevel", "WARNING", "--rate", f"{max(requests_per_s, 0.1) / users:g}", "ConstantRateUser",
    ]
    with open(log, "w") as out:
        locust = subprocess.Popen(command, cwd=LOAD, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(3.0)  # pacing only: Locust starts and spawns its users before the measurement
            yield locust
        finally:
            stop(locust)


def measure_ceiling(seconds: float) -> float:
    """Texts per second of ``embed_texts`` on batches of 32 corpus sentences, back to back, for ``seconds``."""
    sys.path.insert(0, str(REPO))
    from examples._embedder import embed_texts, load_model

    load_model()
    texts = sentences(CEILING_BATCH * 64, seed=1)
    batches = [texts[i : i + CEILING_BATCH] for i in range(0, len(texts), CEILING_BATCH)]
    embed_texts(batches[0])  # warm-up at this batch shape
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        embed_texts(batches[done % len(batches)])
        done += 1
    return done * CEILING_BATCH / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(target: str, server: str, port: int, threads: int) -> list[str]:
    """The command serving the app at ``target`` (``module:name``) on ``server`` with ``threads`` threads."""
    python = sys.executable
    if server == "uvicorn":
        return [python, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-access-log"]
    if server == "gunicorn":
        return [python, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", str(threads),
                "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning", target]
    return [python, "-m", "waitress", "--host", "127.0.0.1", f"--port={port}", f"--threads={threads}", target]


def http_json(url: str, body: Any = None, timeout: float = 60.0, *, sheds: int = 0) -> Any:
    """POST ``body`` (GET without one) and read the JSON answer. Up to ``sheds`` times, a 503 with
    Retry-After (the batcher shedding load it could not serve in time) is waited out and the call
    made again, as the Locust users do."""
    data = None if body is None else json.dumps(body).encode()
    attempt = 0
    while True:
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            retry_after = exc.headers.get("Retry-After")
            if exc.code != 503 or retry_after is None or attempt == sheds:
                raise
            attempt += 1
            time.sleep(min(float(retry_after), 5.0))  # pacing the retry the server asked for


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serving(framework: str, server: str, mode: str, threads: int, log: Path) -> Iterator[Server]:
    """Start the app in ``mode`` in a server process of its own (not yet healthy); always stop it on exit."""
    port = free_port()
    env = {**os.environ, "MICROBATCH_MODE": mode, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as out:
        process = subprocess.Popen(
            server_command(APPS[framework, server], server, port, threads), cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own group: Ctrl-C here is ours to handle
        )
        try:
            yield Server(f"http://127.0.0.1:{port}", process, log)
        finally:
            stop(process)


STUBS = {"uvicorn": "stub_app:app", "gunicorn": "stub_app:wsgi_app", "waitress": "stub_app:wsgi_app"}


@contextmanager
def serving_stub(server: str, threads: int, log: Path) -> Iterator[Server]:
    """The model-less stand-in (``load/stub_app.py``) on the step's own HTTP server, with its settings, so
    the loaded ceiling pays for the same request handling; always stopped on exit."""
    port = free_port()
    command = server_command(STUBS[server], server, port, threads)
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=LOAD, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield Server(f"http://127.0.0.1:{port}", process, log)
        finally:
            stop(process)


def wait_healthy(server: Server) -> str:
    """The server's URL once ``/healthz`` answers ok (the model is loaded)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.process.returncode}; see {server.log}")
        try:
            if http_json(f"{server.url}/healthz", timeout=2).get("status") == "ok":
                return server.url
        except (OSError, ValueError):
            pass  # not listening yet
        time.sleep(0.25)  # polling a starting process: nothing to wait on but time
    raise RuntimeError(f"the server was not healthy within {START_TIMEOUT:.0f}s; see {server.log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: the batcher drains), then SIGKILL to the process group after 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def warm_up(url: str) -> None:
    """Sequential single texts, then bursts of 32 concurrent ones, then a list: every code path runs
    once and the batcher has measured its cost model before anything is timed."""
    texts = sentences(96, seed=2)
    # A busy machine slows the model, so the batcher may shed part of a burst: wait those out.
    for text in texts[:16]:
        http_json(f"{url}/embed", {"text": text}, sheds=5)
    with ThreadPoolExecutor(32) as pool:
        for burst in range(2):
            list(pool.map(lambda t: http_json(f"{url}/embed", {"text": t}, sheds=5),
                          texts[32 * burst : 32 * burst + 32]))
    http_json(f"{url}/embed", {"texts": texts[64:96]}, sheds=5)


# ------------------------------------------------------------------------------------------ locust


def run_locust(
    url: str, classes: Sequence[str], users: int, seconds: float, prefix: Path, rate: float | None = None,
    *, locustfile: str = "locustfile.py",
) -> dict[str, Any]:
    """One headless Locust run of ``classes`` from ``locustfile`` (in ``load/``); returns its record of the
    measurement window."""
    results = prefix.with_suffix(".json")
    command = [
        sys.executable, "-m", "locust", "-f", str(LOAD / locustfile), "--headless", "--only-summary",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds:g}s", "--host", url,
        "--csv", str(prefix), "--loglevel", "WARNING", "--results-file", str(results),
        *(["--rate", f"{rate:g}"] if rate is not None else []), *classes,
    ]
    with open(prefix.with_suffix(".log"), "w") as out:
        # Exit code 1 only says some requests failed: the failures are counted from the records.
        subprocess.run(command, cwd=LOAD, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 120, check=False)
    if not results.exists():
        raise RuntimeError(f"Locust wrote no results; see {prefix.with_suffix('.log')}")
    loaded: dict[str, Any] = json.loads(results.read_text())
    return loaded


def measure(
    urls: dict[str, str], step: str, classes: Sequence[str], users: int, seconds: float, rounds: int, out: Path,
    rate: float | None = None,
) -> list[Step]:
    """One step for every mode: ``rounds`` runs of ``seconds / rounds`` each, the modes taking turns in ABBA
    order (a drift of the machine's speed during the step lands on both alike), each mode's rounds pooled."""
    modes = list(urls)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for n in range(rounds):
        for mode in modes if n % 2 == 0 else modes[::-1]:
            suffix = f"-r{n + 1}" if rounds > 1 else ""
            runs[mode].append(run_locust(urls[mode], classes, users, seconds / rounds,
                                         out / f"{mode}-{step}-{users}u{suffix}", rate))
    steps = []
    for mode in modes:
        results = pooled(runs[mode])
        summary = summarise(results, step, users, mode)
        summary.mean_batch = mean_batch(results["batch_sizes"])
        if rate is not None:
            summary.offered_rps = rate * users
        for message, count in results["failures"].items():
            print(f"    {mode} {step} {users}u: {count} x {message}", file=sys.stderr)
        steps.append(summary)
    return steps


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--framework", default="starlette",
                        help="starlette, flask or django, several comma-separated (each in turn, in one run, "
                             "compared at the end), or all")
    parser.add_argument("--server", choices=("uvicorn", "gunicorn", "waitress"),
                        help="with one framework: default uvicorn for starlette and django (ASGI), gunicorn "
                             "gthread for flask; gunicorn or waitress serve django's WSGI app")
    parser.add_argument("--users", help="closed-loop user counts (default 1,8,32,64; --quick: 1,32)")
    parser.add_argument("--duration", type=float, help="seconds per step (default 15; --quick: 3)")
    parser.add_argument("--modes", default="batched,unbatched", help="default: both")
    parser.add_argument("--mixed-users", type=int, help="users of the mixed step, 0 skips it (default 32; --quick: 8)")
    parser.add_argument("--rate-users", type=int,
                        help="users of the constant-rate step, 0 skips it (default 64; --quick: 16)")
    parser.add_argument("--rate", type=float, help="requests/s offered in all by the constant-rate step "
                                                   "(default: half the offline ceiling)")
    parser.add_argument("--rounds", type=int,
                        help="each step's --duration split into this many runs a mode, the modes in turn "
                             "(default: one per 5 s of --duration, at most 3)")
    parser.add_argument("--ceiling-seconds", type=float, help="each ceiling measurement (default 4; --quick: 2)")
    parser.add_argument("--no-loaded-ceiling", dest="loaded_ceiling", action="store_false",
                        help="skip the ceiling measured beside the load generator")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer, shorter steps")
    parser.add_argument("--out", type=Path, default=LOAD / "results")
    args = parser.parse_args(argv)
    defaults = {"users": "1,32", "duration": 3.0, "mixed_users": 8, "rate_users": 16, "ceiling_seconds": 2.0} \
        if args.quick else {"users": "1,8,32,64", "duration": 15.0, "mixed_users": 32, "rate_users": 64,
                            "ceiling_seconds": 4.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    frameworks = list(DEFAULT_SERVER) if args.framework == "all" else args.framework.split(",")
    unknown = sorted(set(frameworks) - set(DEFAULT_SERVER))
    if unknown:
        parser.error(f"unknown --framework {', '.join(unknown)}: choose from {', '.join(DEFAULT_SERVER)} or all")
    if args.server and len(frameworks) > 1:
        parser.error("--server goes with a single --framework; several run on their default servers")
    args.targets = [(f, args.server or DEFAULT_SERVER[f]) for f in dict.fromkeys(frameworks)]
    for framework, server in args.targets:
        if (framework, server) not in APPS:
            parser.error(f"--framework {framework} cannot run on --server {server}")
    if args.rounds is None:  # a Locust run of under 5 s is mostly its start: split only long steps
        args.rounds = max(1, min(3, int(args.duration // 5)))
    args.user_counts = sorted({int(u) for u in args.users.split(",")})
    args.mode_list = [m for m in MODES if m in args.modes.split(",")]
    if not args.mode_list or min(args.user_counts) < 1 or args.duration <= 0 or args.rounds < 1:
        parser.error("need at least one mode, user counts >= 1, a positive --duration and --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = args.out / f"{'+'.join(f'{f}-{s}' for f, s in args.targets)}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"microbatch load comparison: {', '.join(f'{f} on {s}' for f, s in args.targets)}, one worker each, "
          f"all-MiniLM-L6-v2 on {os.cpu_count()} CPUs; results in {run}", flush=True)
    compared: dict[tuple[str, str], list[Step]] = {}
    for framework, server in args.targets:
        out = run / f"{framework}-{server}" if len(args.targets) > 1 else run
        out.mkdir(parents=True)
        compared[framework, server] = compare_server(framework, server, args, out)
    print()
    for line in across(compared):
        print(line)
    return 0


def compare_server(framework: str, server: str, args: argparse.Namespace, out: Path) -> list[Step]:
    """Every step against one framework's app on one server, both modes; prints and writes its report."""
    title = f"{framework} on {server}, one worker, all-MiniLM-L6-v2 on {os.cpu_count()} CPUs"
    print(f"{title}:", flush=True)
    print(f"measuring the offline ceiling (batches of {CEILING_BATCH}, {args.ceiling_seconds:g} s)...", flush=True)
    ceilings = [measure_ceiling(args.ceiling_seconds)]
    print(f"  ceiling: {ceilings[0]:.1f} texts/s", flush=True)

    threads = max(args.user_counts + [args.mixed_users, args.rate_users]) + 16  # a thread per user, and spare
    steps: list[Step] = []
    with ExitStack() as stack:
        print(f"starting the {' and '.join(args.mode_list)} servers...", flush=True)
        servers = {  # all started at once: they load the model side by side
            mode: stack.enter_context(serving(framework, server, mode, threads, out / f"server-{mode}.log"))
            for mode in args.mode_list
        }
        stub_url = None
        if args.loaded_ceiling:
            stub = stack.enter_context(serving_stub(server, threads, out / "server-stub.log"))
        urls = {mode: wait_healthy(server) for mode, server in servers.items()}
        if args.loaded_ceiling:
            stub_url = wait_healthy(stub)
        for url in urls.values():
            warm_up(url)
        ceilings.append(measure_ceiling(args.ceiling_seconds))  # with the servers up and idle

        def run(step: str, classes: Sequence[str], users: int, rate: float | None = None) -> None:
            print(f"  {step:<6} {users:>3} users ({args.rounds} rounds a mode)", flush=True)
            results = measure(urls, step, classes, users, args.duration, args.rounds, out, rate)
            ceilings.append(measure_ceiling(args.ceiling_seconds))
            for result in results:
                result.ceiling = (ceilings[-2] + ceilings[-1]) / 2
                line = (f"    {result.mode:<9} {result.texts_per_s:7.1f} texts/s  p50 {fmt(result.p50_ms):>7} ms  "
                        f"p95 {fmt(result.p95_ms):>7} ms  fails {result.failures}  shed {result.shed}  "
                        f"ceiling {result.ceiling:.0f}")
                if stub_url is not None and result.mode == "batched" and result.requests_per_s:
                    result.loaded_ceiling = ceiling_beside_load(
                        stub_url, users, result.requests_per_s, args.ceiling_seconds, out
                    )
                    line += f"  beside the load {result.loaded_ceiling:.0f}"
                print(line, flush=True)
                steps.append(result)

        print(f"closed-loop sweep ({args.duration:g} s a step):", flush=True)
        for users in args.user_counts:
            run("closed", ["InteractiveUser"], users)
        if args.mixed_users:
            run("mixed", ["InteractiveUser", "BulkUser"], args.mixed_users)
        if args.rate_users:
            offered = args.rate if args.rate else round(ceilings[0] / 2)
            run("rate", ["ConstantRateUser"], args.rate_users, rate=offered / args.rate_users)

    print()
    print(f"offline ceiling (batches of {CEILING_BATCH}, {args.ceiling_seconds:g} s each, measured between steps): "
          f"{min(ceilings):.0f} to {max(ceilings):.0f} texts/s; {title}")
    print(table(steps))
    print()
    for line in notes(steps):
        print(line)
    write_csv(steps, out / "summary.csv")
    plot(steps, title, out / "comparison.png")
    print(f"\ntable: {out / 'summary.csv'}")
    print(f"plot: {out / 'comparison.png'}\n", flush=True)
    return steps



if __name__ == "__main__":
    sys.exit(main())
