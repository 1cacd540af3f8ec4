"""Real Redis and real host processes for the microbatch.remote tests.

``redis_server`` starts its own redis-server (Debian's package) on a free port in a temporary
directory, without persistence, and stops it by PID; it can stop and start that same server
mid-test. ``start_host`` runs ``python -m microbatch serve tests.remote._targets:FN`` as a
subprocess and returns once the host has reported itself in Redis. Every wait is for a condition.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from microbatch.remote import RemoteBatcher
from tests._support import thread_errors, wait_until  # noqa: F401 - thread_errors is an autouse fixture
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process on a fixed loopback port; ``stop``/``start`` keep the port."""

    __slots__ = ("port", "directory", "process", "url")

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = self.client()
        wait_until(lambda: _pings(client), "redis-server answers PING")
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.process.pid if self.process else None}>"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is not installed: run scripts/env.sh (it installs Debian's redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the test's Redis, for looking at keys."""
    client = redis_server.client()
    yield client
    client.close()


class HostProcess:
    """A ``microbatch serve`` subprocess."""

    __slots__ = ("process", "name", "url", "log")

    def __init__(self, process: subprocess.Popen[bytes], name: str, url: str, log: Path) -> None:
        self.process = process
        self.name = name
        self.url = url
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __repr__(self) -> str:
        return f"<HostProcess {self.name!r} pid={self.pid} returncode={self.process.poll()}>"


def host_env(url: str) -> dict[str, str]:
    paths = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "MB_TEST_REDIS": url}


@pytest.fixture
def start_host(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., HostProcess]]:
    """``start_host("echo", name="t", *flags)`` runs a host of ``tests.remote._targets.echo`` (or of a full
    ``package.module:name`` target) until the test ends."""
    hosts: list[HostProcess] = []
    client = redis_server.client()

    def start(fn: str, *flags: str, name: str = "t", ready: bool = True) -> HostProcess:
        log = tmp_path / f"host-{fn.replace(':', '.')}-{len(hosts)}.log"
        target = fn if ":" in fn else f"tests.remote._targets:{fn}"
        with log.open("wb") as out:  # the host writes to its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "microbatch", "serve", target, "--url", redis_server.url,
                 "--name", name, "--claim-idle", "1", "--report-interval", "0.05", *flags],
                env=host_env(redis_server.url), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        host = HostProcess(process, name, redis_server.url, log)
        hosts.append(host)
        if ready:
            wait_until(lambda: any(_text(k).split(":")[1] == str(process.pid)
                                   for k in client.hkeys(f"microbatch:{name}:hosts")) or process.poll() is not None,
                       "the host reports itself in Redis")
            assert process.poll() is None, f"the host exited: {host.output()}"
        return host

    yield start
    for host in hosts:
        if host.process.poll() is None:
            host.process.kill()
            host.process.wait(10)
    client.close()


@pytest.fixture
def remote(redis_server: RedisServer) -> Iterator[Callable[..., RemoteBatcher[Any, Any]]]:
    """``remote(name="t", **options)``: a RemoteBatcher on the test's Redis, closed after the test."""
    made: list[RemoteBatcher[Any, Any]] = []

    def make(name: str = "t", **options: Any) -> RemoteBatcher[Any, Any]:
        batcher: RemoteBatcher[Any, Any] = RemoteBatcher(name, url=redis_server.url, **options)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(drain=False)
