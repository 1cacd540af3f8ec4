"""The host's carry path: with a fast model its reader waits a moment for the calls it just submitted and
sends their replies (the FINISH script) in the round trip of its next read; otherwise the flusher replies.

These tests watch Redis rather than the host's insides. MONITOR names the connection that sent each
command; the reader's connection is the one client parked in XREADGROUP (no other connection ever reads
the stream), so a FINISH from it was carried, and a FINISH from any other connection was sent by the
flusher (or, for a lone call, by the batcher's worker). The run-time median that picks the path is the
one the host publishes: its heartbeat stores the median for its reader as it writes the report.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import redis

from microbatch.remote import HostStats, RemoteBatcher
from microbatch.remote._reading import _CARRY_WAIT
from microbatch.remote._wire import FINISH, Keys, reply_key
from tests._support import WAIT, wait_until

from ._client_proc import CALLS
from .conftest import ROOT, HostProcess, RedisServer, host_env

ROUND = 48  # calls sent at once: one stream entry, read at once and run as one batch
ONE_BATCH = ("--max-batch-size", "64")  # a round's calls fit one batch, so one wait of the reader covers them
ATTEMPTS = 20  # rounds a test may take to see a path that hangs on a 2 ms window (on a quiet machine, the first)
_MARK = "microbatch-test-mark"
_REPLY_KEY = re.compile(re.escape(reply_key("")) + r"\S+")


# ---------------------------------------------------------------------------------------------- watching Redis


@dataclass(frozen=True, slots=True)
class Sent:
    """One command Redis ran: the port of the connection that sent it, and its words as MONITOR prints them."""

    port: str
    command: str

    def is_finish(self) -> bool:
        return self.command.startswith(f"EVALSHA {FINISH.sha} ")

    def reply_keys(self) -> set[str]:
        """The reply keys a FINISH pushes to (its other words are stream ids, counts and escaped blobs)."""
        return set(_REPLY_KEY.findall(self.command))

    def loads_finish(self) -> bool:
        # MONITOR escapes the newlines of the script's source.
        return self.command == "SCRIPT LOAD " + FINISH.source.replace("\n", "\\n")


class Monitor:
    """Redis's MONITOR feed, read by a thread: every command the server runs, in the order it ran them."""

    __slots__ = ("_feed", "_poke", "_lock", "_sent", "_marks", "_listening", "_thread")

    def __init__(self, server: RedisServer) -> None:
        self._feed = redis.Redis.from_url(server.url, socket_timeout=None)  # a quiet server sends nothing
        self._poke = server.client()
        self._lock = threading.Lock()
        self._sent: list[Sent] = []
        self._marks: dict[str, threading.Event] = {}
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()
        assert self._listening.wait(WAIT), "MONITOR did not start"

    def _read(self) -> None:
        with self._feed.monitor() as feed:  # type: ignore[no-untyped-call]
            self._listening.set()
            for record in feed.listen():
                command: str = record["command"]
                if command.startswith(f"ECHO {_MARK} "):
                    token = command.split()[2]
                    self._marks[token].set()
                    if token == "stop":
                        return
                elif record["client_type"] != "lua":  # a script's own commands: its EVALSHA stands for them
                    with self._lock:
                        self._sent.append(Sent(record["client_port"], command))

    def window(self) -> list[Sent]:
        """What Redis ran since the last window: every command it ran before this call, none after."""
        token = uuid.uuid4().hex
        seen = self._marks[token] = threading.Event()
        self._poke.echo(f"{_MARK} {token}")  # Redis runs commands one at a time: the feed is ordered
        assert seen.wait(WAIT), "MONITOR did not show the mark"
        with self._lock:
            taken, self._sent = self._sent, []
        return taken

    def close(self) -> None:
        self._marks["stop"] = threading.Event()
        self._poke.echo(f"{_MARK} stop")
        self._thread.join(WAIT)
        self._poke.close()
        self._feed.close()

    def __repr__(self) -> str:
        return f"<Monitor unread={len(self._sent)} listening={self._thread.is_alive()}>"


@pytest.fixture
def monitor(redis_server: RedisServer) -> Iterator[Monitor]:
    watching = Monitor(redis_server)
    yield watching
    watching.close()


@dataclass(frozen=True, slots=True)
class Finishes:
    """How many FINISH calls a window holds, by sender: the reader (carried with its next read) or another."""

    carried: int
    others: int


def finishes(window: list[Sent], reader: str) -> Finishes:
    """The FINISH calls in ``window`` by sender, ``reader`` being the port of the host's reader connection."""
    assert {s.port for s in window if s.command.startswith("XREADGROUP ")} <= {reader}, "the reader reconnected"
    ports = [s.port for s in window if s.is_finish()]
    return Finishes(carried=ports.count(reader), others=len(ports) - ports.count(reader))


def reader_port(r: redis.Redis) -> str:
    """The port of the host's reader connection: the one client whose last command is XREADGROUP."""
    readers: list[dict[str, Any]] = []

    def found() -> bool:
        readers[:] = [c for c in r.client_list() if c["cmd"] == "xreadgroup"]
        return len(readers) == 1

    wait_until(found, "the host's reader waits in XREADGROUP")
    return str(readers[0]["addr"]).rsplit(":", 1)[1]


def published_run_p50(rb: RemoteBatcher[Any, Any], batches: int) -> float:
    """The host's batch run-time median from its first report counting ``batches`` batches: the median its
    reader goes by from that heartbeat on."""
    wait_until(lambda: any(h.stats.batches >= batches for h in rb.stats.hosts.values()),
               f"the host reports {batches} batches")
    (host,) = rb.stats.hosts.values()
    return host.stats.run_time_p50


def next_report(r: redis.Redis, rb: RemoteBatcher[Any, Any]) -> HostStats:
    """The host's first report published after now (a heartbeat publishes, then claims abandoned entries:
    the report current when a call returns may predate the claim that answered it)."""
    seconds, micros = r.time()
    now_ms = seconds * 1000.0 + micros / 1000.0
    hosts = Keys(rb.name).hosts
    (consumer,) = r.hkeys(hosts)

    def published_at() -> float:
        return float(msgpack.unpackb(r.hget(hosts, consumer), raw=False)["at_ms"])

    wait_until(lambda: published_at() > now_ms, "the host publishes its next report")
    (host,) = rb.stats.hosts.values()
    return host


def concurrent_round(rb: RemoteBatcher[Any, Any], tag: str) -> None:
    """ROUND calls at once from one event loop, distinct items; each must come back with its own item."""
    items = [f"{tag}-{i}" for i in range(ROUND)]

    async def send() -> list[Any]:
        return await asyncio.gather(*(rb.acall(item) for item in items))

    assert [result[0] for result in asyncio.run(send())] == items


def fast_host(
    start_host: Callable[..., HostProcess], remote: Callable[..., Any]
) -> tuple[HostProcess, RemoteBatcher[Any, Any]]:
    """A host of a model that runs in microseconds, once its published median says so, and a client."""
    host = start_host("paced_echo", *ONE_BATCH)
    rb: RemoteBatcher[Any, Any] = remote(timeout=10)  # a lost reply fails the call rather than hang the test
    assert rb("warm-up") == ["warm-up", host.pid]
    assert published_run_p50(rb, 1) <= _CARRY_WAIT / 2  # the reader carries from now on
    return host, rb


# ---------------------------------------------------------------------------------------------- the tests


def test_with_a_fast_model_the_reader_carries_the_replies_of_concurrent_calls_with_its_next_read(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis, monitor: Monitor
) -> None:
    _, rb = fast_host(start_host, remote)
    reader = reader_port(r)
    monitor.window()
    seen: list[Finishes] = []
    for attempt in range(ATTEMPTS):
        concurrent_round(rb, f"r{attempt}")
        seen.append(finishes(monitor.window(), reader))
        if seen[-1].carried and not seen[-1].others:
            break  # the round's replies went with the reader's next XREADGROUP, none by the flusher
    else:
        pytest.fail(f"no round's replies were all carried by the reader: {seen}")


def test_with_a_slow_model_the_reader_never_waits_and_the_flusher_replies_even_to_quick_batches(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis, monitor: Monitor
) -> None:
    start_host("paced_echo", *ONE_BATCH)
    rb: RemoteBatcher[Any, Any] = remote(timeout=10)
    slow = 8  # 20 ms batches, more than the quick ones below: the median stays 20 ms for the whole test
    for k in range(slow):
        assert rb(f"slow-{k}")[0] == f"slow-{k}"
    assert published_run_p50(rb, slow) > _CARRY_WAIT / 2
    reader = reader_port(r)
    monitor.window()
    seen: list[Finishes] = []
    for k in range(4):
        # Each batch ends within microseconds, well inside the reader's 2 ms wait: had the reader waited
        # for them it would have carried their replies. It goes straight back to its read instead.
        concurrent_round(rb, f"quick-{k}")
        seen.append(finishes(monitor.window(), reader))
    # One round may be carried without any wait: a reader descheduled between its submit and its next
    # read finds the batch already finished and rightly takes its replies along. Waiting carries every one.
    assert sum(f.carried == 0 and f.others >= 1 for f in seen) >= len(seen) - 1, seen


def test_a_carried_finish_that_meets_noscript_goes_to_the_flusher_and_every_caller_gets_its_own_result(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis, monitor: Monitor
) -> None:
    _, rb = fast_host(start_host, remote)
    reader = reader_port(r)
    for attempt in range(ATTEMPTS):
        r.script_flush()  # as a Redis restarted with the same data would, or an operator
        monitor.window()
        concurrent_round(rb, f"r{attempt}")
        window = monitor.window()
        loads = [i for i, s in enumerate(window) if s.loads_finish()]
        assert loads, "the replies came, so someone loaded FINISH again"
        before_load = [s for s in window[:loads[0]] if s.is_finish()]
        if before_load and before_load[0].port == reader:
            # The reader's pipelined FINISH met NOSCRIPT (nothing had loaded it since the flush). Another
            # connection (the flusher, given the arguments) loaded the script and sent them again.
            assert window[loads[0]].port != reader
            assert any(s.is_finish() and s.port != reader for s in window[loads[0]:])
            break
    else:
        pytest.fail("the reader's carried FINISH never was the first after a SCRIPT FLUSH")
    # Each call ran once and was answered by that run: replies lost with the failed FINISH would have been
    # recovered only by claiming their entry again after claim_idle and running it twice.
    report = next_report(r, rb)
    assert (report.stats.completed, report.claimed) == (1 + ROUND * (attempt + 1), 0)


def test_concurrent_threads_loops_and_processes_each_get_their_own_result_while_the_reader_carries(
    start_host: Callable[..., Any], remote: Callable[..., Any], r: redis.Redis, monitor: Monitor,
    redis_server: RedisServer,
) -> None:
    host, rb = fast_host(start_host, remote)
    reader = reader_port(r)
    monitor.window()
    # Another process's callers as well, so that one FINISH may hold replies for several clients.
    other = subprocess.Popen([sys.executable, "-m", "tests.remote._client_proc", redis_server.url, "t", "p"],
                             env=host_env(redis_server.url), cwd=ROOT, stdout=subprocess.PIPE)
    other_done = threading.Event()
    answered: list[tuple[str, Any]] = []  # (item, its result), from every caller here; every item is distinct

    def thread_caller(k: int) -> None:
        i = 0
        while i < 30 or not other_done.is_set():  # overlap with the other process for as long as it calls
            answered.append((f"t{k}-{i}", rb(f"t{k}-{i}")))
            i += 1
        items = [f"t{k}-map-{i}" for i in range(7)]
        answered.extend(zip(items, rb.map(items), strict=True))

    def loop_caller(k: int) -> None:
        async def task(j: int) -> None:
            i = 0
            while i < 4 or not other_done.is_set():
                answered.append((f"a{k}-{j}-{i}", await rb.acall(f"a{k}-{j}-{i}")))
                i += 1

        async def run() -> None:
            await asyncio.gather(*(task(j) for j in range(40)))

        asyncio.run(run())

    callers = [threading.Thread(target=thread_caller, args=(k,)) for k in range(4)]
    callers += [threading.Thread(target=loop_caller, args=(k,)) for k in range(2)]
    for caller in callers:
        caller.start()
    out, _ = other.communicate(timeout=60)
    other_done.set()
    for caller in callers:
        caller.join()
    assert other.returncode == 0
    assert json.loads(out) == {"good": 4 * CALLS + 2 * (8 * (CALLS // 8) + 5), "wrong": []}
    assert len({item for item, _ in answered}) == len(answered) >= 4 * (30 + 7) + 2 * 40 * 4
    assert [(item, result) for item, result in answered if result != [item, host.pid]] == []
    # Replies went with the reader's reads, some of them to several clients in one FINISH (how many depends
    # on timing: the first test pins the path).
    carried = [s for s in monitor.window() if s.is_finish() and s.port == reader]
    assert any(len(s.reply_keys()) > 1 for s in carried), f"{len(carried)} carried, each to one client"
