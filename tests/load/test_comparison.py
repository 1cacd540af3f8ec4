"""How ``compare.py`` lays out a run: the model-less stub on the step's own server (and what that server
costs, ``bench_stub_cpu.py``), a step's rounds pooled per mode, and several frameworks compared at the
end of one run."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_stub_cpu
import compare
import pytest
import steps
from outcomes import ACCEPTED, FAILED
from stub_app import DIMENSIONS

from tests._support import wait_until


@pytest.mark.parametrize("server", sorted(compare.STUBS))
def test_the_stub_answers_like_the_service_on_every_server_a_step_can_use(server: str, tmp_path: Path) -> None:
    with compare.serving_stub(server, 4, tmp_path / "stub.log") as stub:
        url = compare.wait_healthy(stub)
        one = compare.http_json(f"{url}/embed", {"text": "a"})
        three = compare.http_json(f"{url}/embed", {"texts": ["a", "b", "c"]})
        assert compare.http_json(f"{url}/healthz")["mode"] == "stub"
    assert stub.process.returncode is not None  # stopped on leaving
    vectors = [one["embedding"], *three["embeddings"]]
    assert len(vectors) == 4
    assert all(len(v) == DIMENSIONS and math.isclose(math.fsum(x * x for x in v), 1.0) for v in vectors)


def run(
    start: float, seconds: float, *records: list[Any], failures: dict[str, int] | None = None,
    batch_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One Locust run's record of its window, as ``run_locust`` returns it."""
    return {"window": [start, start + seconds], "records": list(records), "failures": failures or {},
            "batch_sizes": batch_sizes or {}}


def test_a_modes_rounds_pool_into_one_window_of_their_summed_length() -> None:
    first = run(100.0, 5.0, ["/embed text", 100.5, 0.25, 1, ACCEPTED], batch_sizes={"1": 2, "32": 1})
    second = run(400.0, 4.0, ["/embed text", 401.0, 0.5, 1, ACCEPTED], ["/embed text", 402.0, 0.1, 1, FAILED],
                 failures={"HTTP 500": 1}, batch_sizes={"32": 2})
    third = run(700.0, 1.0, ["/embed text", 700.5, 1.0, 1, ACCEPTED], failures={"HTTP 500": 2})
    pooled = steps.pooled([first, second, third])
    step = steps.summarise(pooled, "closed", 1, "batched")
    # 3 accepted texts over the rounds' 10 s, not over the 601 s from the first round's start to the last's end
    assert (step.seconds, step.requests, step.texts_per_s, step.failures) == (10.0, 3, 0.3, 1)
    assert (step.p50_ms, step.p99_ms) == (500.0, 1000.0)
    assert pooled["failures"] == {"HTTP 500": 3}
    assert pooled["batch_sizes"] == {"1": 2, "32": 3}
    assert steps.mean_batch(pooled["batch_sizes"]) == (2 * 1 + 3 * 32) / 5
    assert steps.mean_batch({}) is None  # unbatched: no batches to average


def test_all_runs_the_three_frameworks_each_on_its_default_server() -> None:
    args = compare.parse_args(["--framework", "all"])
    assert args.targets == [("starlette", "uvicorn"), ("flask", "gunicorn"), ("django", "uvicorn")]
    assert compare.parse_args(["--framework", "flask,flask"]).targets == [("flask", "gunicorn")]
    assert compare.parse_args(["--framework", "django", "--server", "waitress"]).targets == [("django", "waitress")]


@pytest.mark.parametrize(("argv", "rounds"), [([], 3), (["--duration", "5"], 1), (["--duration", "12"], 2),
                                            (["--duration", "60"], 3), (["--duration", "5", "--rounds", "2"], 2)])
def test_a_step_is_split_into_rounds_of_at_least_five_seconds_unless_told(argv: list[str], rounds: int) -> None:
    assert compare.parse_args(argv).rounds == rounds


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--framework", "flask,bottle"], "unknown --framework bottle: choose from starlette, flask, django or all"),
        (["--framework", "flask,django", "--server", "gunicorn"], "--server goes with a single --framework"),
        (["--framework", "starlette", "--server", "gunicorn"], "--framework starlette cannot run on --server gunicorn"),
        (["--rounds", "0"], "--rounds >= 1"),
    ],
)
def test_a_run_that_cannot_be_made_is_refused_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert message in capsys.readouterr().err


def closed(users: int, texts: int, loaded_ceiling: float | None) -> steps.Step:
    return steps.Step(step="closed", users=users, mode="batched", seconds=10.0, requests=texts, texts=texts,
                        failures=0, shed=0, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0, loaded_ceiling=loaded_ceiling)


def test_the_servers_are_compared_at_their_largest_user_count() -> None:
    lines = steps.across({
        ("starlette", "uvicorn"): [closed(1, 300, 110.0), closed(64, 1000, 110.0)],
        ("flask", "gunicorn"): [closed(64, 800, 100.0)],
        ("django", "uvicorn"): [closed(64, 700, 100.0)],
    })
    assert lines == [
        "starlette on uvicorn, 64 users: 100.0 texts/s, 0.91 of the loaded ceiling (target >= 0.85: met)",
        "flask on gunicorn, 64 users: 80.0 texts/s, 0.80 of the loaded ceiling (target >= 0.85: missed)",
        "django on uvicorn, 64 users: 70.0 texts/s, 0.70 of the loaded ceiling (target >= 0.85: missed)",
        "django on uvicorn is 0.88 of flask's texts/s at 64 users (target >= 0.9: missed)",
    ]
    assert steps.across({("flask", "gunicorn"): [closed(64, 800, 100.0)]}) == []  # one server: nothing beside it


def test_a_servers_cpu_counts_the_processes_below_it(tmp_path: Path) -> None:
    # A grandchild burns CPU until told to stop, as gunicorn's worker does below its arbiter.
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        start = bench_stub_cpu.cpu_seconds(parent.pid)
        wait_until(lambda: bench_stub_cpu.cpu_seconds(parent.pid) > start + 0.2, "the grandchild's CPU counts")
        assert bench_stub_cpu.cpu_seconds(os.getpid()) >= bench_stub_cpu.cpu_seconds(parent.pid)  # we are above it
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
