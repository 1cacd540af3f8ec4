"""flask_microbatch behind real servers on loopback: werkzeug's threaded server, waitress, and a
gunicorn ``gthread`` worker in a subprocess; real HTTP clients (requests) on threads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

import flask_microbatch

HERE = Path(__file__).parent
HTTP_TIMEOUT = 10.0


def stats(url: str) -> dict[str, Any]:
    response = requests.get(f"{url}/stats", timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def embed_over_http(url: str, path: str, text: str, **headers: str) -> requests.Response:
    return requests.post(f"{url}{path}", json={"text": text}, headers=headers, timeout=HTTP_TIMEOUT)


def check_concurrent_requests_batch_together(url: str, in_thread: Any, until: Any) -> None:
    """One request runs (held by the gate) while five more, sync and async views mixed, queue behind
    it; once the gate opens they run as one batch and each response carries its own result."""
    first = in_thread(embed_over_http, url, "/embed", "t0")
    until(lambda: stats(url)["running"] == 1, "the first request's batch is running")
    rest = [in_thread(embed_over_http, url, ("/embed", "/aembed")[i % 2], f"t{i}") for i in range(1, 6)]
    until(lambda: stats(url)["queue_depth"] == 5, "five requests are queued behind it")
    requests.post(f"{url}/open", timeout=HTTP_TIMEOUT).raise_for_status()
    responses = [call.result() for call in [first, *rest]]
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["vector"] for r in responses] == [f"vec:t{i}" for i in range(6)]
    assert stats(url)["sizes"] == [1, 5]


def test_werkzeug_threaded_server_batches_concurrent_requests(
    make_app: Callable[..., Flask], wsgi_server: Any, in_thread: Any, until: Any
) -> None:
    with wsgi_server(make_app()) as url:
        check_concurrent_requests_batch_together(url, in_thread, until)


def test_werkzeug_threaded_server_maps_errors(
    make_app: Callable[..., Flask], wsgi_server: Any, in_thread: Any, until: Any
) -> None:
    app = make_app(MICROBATCH_MAX_BATCH_SIZE=1, MICROBATCH_MAX_QUEUE_SIZE=1)
    with wsgi_server(app) as url:
        bad = embed_over_http(url, "/embed", "x", **{"X-Request-Timeout": "soon"})
        assert bad.status_code == 400 and "X-Request-Timeout must be a time > 0" in bad.json()["error"]
        late = embed_over_http(url, "/aembed", "late", **{"X-Request-Timeout": "0.05"})
        assert late.status_code == 504 and "time limit" in late.json()["error"]
        # The gate still holds the expired request's batch, so the next request queues and the one
        # after finds the queue (max_queue_size=1) full.
        queued = in_thread(embed_over_http, url, "/embed", "queued")
        until(lambda: stats(url)["queue_depth"] == 1, "a request is queued")
        busy = embed_over_http(url, "/embed", "busy")
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1 and "error" in busy.json()
        requests.post(f"{url}/open", timeout=HTTP_TIMEOUT).raise_for_status()
        assert queued.result().json() == {"vector": "vec:queued"}


@contextmanager
def run_waitress(app: Flask) -> Iterator[str]:
    """Serve ``app`` with waitress (8 threads) on loopback in a thread; shut it down from its own loop."""
    import waitress
    from waitress import wasyncore

    socket_map: dict[int, Any] = {}
    server: Any = waitress.create_server(app, map=socket_map, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Closing every channel from the loop's own thread empties the map, which ends server.run().
        server.trigger.pull_trigger(lambda: wasyncore.close_all(socket_map))
        thread.join(HTTP_TIMEOUT)
        server.task_dispatcher.shutdown()
        assert not thread.is_alive(), "waitress did not stop"


def test_waitress_batches_concurrent_requests(make_app: Callable[..., Flask], in_thread: Any, until: Any) -> None:
    with run_waitress(make_app()) as url:
        check_concurrent_requests_batch_together(url, in_thread, until)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_gunicorn(tmp_path: Path) -> Iterator[str]:
    """``gunicorn -k gthread --threads 8`` with one worker serving ``served_app:create_app()``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    # The worker imports the same flask_microbatch as these tests, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(flask_microbatch.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
               "-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "served_app:create_app()"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        ready = threading.Event()
        for _ in range(300):  # bounded wait for the subprocess to listen: the only retry loop here
            if process.poll() is not None:
                break
            try:
                requests.get(f"{url}/stats", timeout=1).raise_for_status()
                ready.set()
                break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or the app still loading
                ready.wait(0.1)
        if not ready.is_set():
            pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(HTTP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"gunicorn did not stop on SIGTERM:\n{log.read_text()}")
    assert process.returncode == 0, log.read_text()


def test_gunicorn_gthread_batches_concurrent_requests(tmp_path: Path, in_thread: Any, until: Any) -> None:
    with run_gunicorn(tmp_path) as url:
        check_concurrent_requests_batch_together(url, in_thread, until)
