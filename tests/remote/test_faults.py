"""Many clients at once, a host killed under load, and Redis itself stopped and restarted under load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from microbatch import DeadlineExceeded
from microbatch.remote import RedisUnavailable, RemoteBatcher
from tests._support import wait_until

from ._client_proc import CALLS
from .conftest import ROOT, RedisServer, host_env


def test_several_client_processes_and_event_loops_each_get_their_own_results(
    start_host: Callable[..., Any], redis_server: RedisServer
) -> None:
    start_host("echo", "--max-batch-size", "16")
    clients = [
        subprocess.Popen([sys.executable, "-m", "tests.remote._client_proc", redis_server.url, "t", f"p{k}"],
                         env=host_env(redis_server.url), cwd=ROOT, stdout=subprocess.PIPE)
        for k in range(3)
    ]
    per_process = 4 * CALLS + 2 * (8 * (CALLS // 8) + 5)
    for client in clients:
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0
        assert json.loads(out) == {"good": per_process, "wrong": []}


class Load:
    """Callers on threads sending unique items until stopped; every outcome is recorded."""

    __slots__ = ("rb", "stop", "threads", "lock", "results", "errors", "wrong")

    def __init__(self, rb: RemoteBatcher[str, Any], callers: int) -> None:
        self.rb = rb
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, Any]] = []  # (when, host pid)
        self.errors: list[tuple[float, float, BaseException]] = []  # (when, seconds taken, error)
        self.wrong: list[Any] = []
        self.threads = [threading.Thread(target=self.call, args=(k,), daemon=True) for k in range(callers)]
        for t in self.threads:
            t.start()

    def call(self, k: int) -> None:
        i = 0
        while not self.stop.is_set():
            item = f"c{k}-{i}"
            i += 1
            started = time.monotonic()
            try:
                result = self.rb(item)
            except Exception as exc:
                with self.lock:
                    self.errors.append((started, time.monotonic() - started, exc))
                continue
            with self.lock:
                self.results.append((time.monotonic(), result[1]))
                if result[0] != item:
                    self.wrong.append((item, result))

    def count(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for when, _ in self.results if when > since)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive()


def test_sigkill_of_one_of_two_hosts_under_load_loses_no_call(
    start_host: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    doomed = start_host("slow_echo", "--max-batch-size", "8")
    survivor = start_host("slow_echo", "--max-batch-size", "8")
    rb = remote(timeout=15)
    load = Load(rb, callers=24)
    try:
        wait_until(lambda: {doomed.pid, survivor.pid} <= {pid for _, pid in load.results}, "both hosts serve")
        wait_until(lambda: any(h.stats.running + h.stats.queue_depth > 0 for h in rb.stats.hosts.values()
                               if h.consumer.split(":")[1] == str(doomed.pid)), "the doomed host holds work")
        doomed.kill()
        killed_at = time.monotonic()
        wait_until(lambda: sum(h.claimed for h in rb.stats.hosts.values()) > 0, "the survivor claims the work")
        wait_until(lambda: load.count(since=killed_at) >= 200, "calls go on after the kill", timeout=30)
    finally:
        load.finish()
    assert load.wrong == []
    assert load.errors == []  # every accepted call got its result, the claimed ones from the survivor
    assert rb.stats.client.in_flight == 0


def test_redis_stopped_and_restarted_under_load(
    start_host: Callable[..., Any], remote: Callable[..., Any], redis_server: RedisServer
) -> None:
    start_host("echo")
    rb = remote(timeout=10)
    load = Load(rb, callers=8)
    try:
        wait_until(lambda: load.count() >= 100, "calls are served")
        redis_server.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: any(when > stopped_at for when, _, _ in load.errors), "calls fail while Redis is down")
        redis_server.start()
        restarted_at = time.monotonic()
        wait_until(lambda: load.count(since=restarted_at) >= 100, "clients and host reconnect by themselves",
                   timeout=20)
    finally:
        load.finish()
    assert load.wrong == []
    assert load.errors, "the outage was not seen"
    for _started, took, error in load.errors:
        assert isinstance(error, RedisUnavailable), error
        assert took < 2.0, (took, error)  # about a second at most, never the 10 s timeout
    assert not any(isinstance(e, DeadlineExceeded) for _, _, e in load.errors)


def test_with_no_host_a_call_raises_deadline_exceeded_at_its_timeout(remote: Callable[..., Any]) -> None:
    rb = remote(timeout=0.2)
    started = time.monotonic()
    try:
        rb("x")
    except DeadlineExceeded:
        pass
    else:
        raise AssertionError("a call with no host returned")
    assert 0.2 <= time.monotonic() - started < 1.5


def test_redis_unreachable_fails_a_call_within_a_second() -> None:
    rb: RemoteBatcher[str, Any] = RemoteBatcher("t", url="redis://127.0.0.1:1/0", timeout=5)
    started = time.monotonic()
    try:
        rb("x")
    except RedisUnavailable as exc:
        assert "unreachable" in str(exc)
    else:
        raise AssertionError("a call to an unreachable Redis returned")
    finally:
        rb.close()
    assert time.monotonic() - started < 1.5
    assert rb.client_stats().rejected == 1 and rb.client_stats().unavailable == 1


def test_the_reply_key_of_a_dead_client_expires(
    start_host: Callable[..., Any], redis_server: RedisServer, r: redis.Redis
) -> None:
    start_host("gated")
    script = f"from microbatch.remote import RemoteBatcher; RemoteBatcher('t', url={redis_server.url!r})('x')"
    client = subprocess.Popen([sys.executable, "-c", script], env=host_env(redis_server.url), cwd=ROOT)
    wait_until(lambda: r.llen("ran:gated") == 1, "the dead-to-be client's call is in the model")
    client.kill()
    client.wait(10)
    r.rpush("gate", "go")
    wait_until(lambda: bool(r.keys("microbatch:reply:*")), "the host replies to the dead client")
    (key,) = r.keys("microbatch:reply:*")
    assert 0 < r.pttl(key) <= 60_000  # nobody pops it: Redis deletes it within a minute
