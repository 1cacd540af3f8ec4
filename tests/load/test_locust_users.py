"""The locustfile's users against a stand-in service on loopback, in a real headless Locust run: a user
waits a shed request's Retry-After before its next request (``locust_overload.ImpatientUser`` does not),
and the ``--results-file`` records say which requests were accepted, shed or failed, and how many batches
of each size the service ran while the window was open."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from outcomes import ACCEPTED, FAILED, SHED

LOAD = Path(__file__).resolve().parents[2] / "load"
VECTOR = [1 / math.sqrt(384)] * 384
RUN_SECONDS = 4
LONG_RETRY_AFTER = "60"  # longer than the run: a user that honours it sends nothing more


class ScriptedService:
    """``POST /embed`` that answers the load's requests in turn: a 503 without Retry-After, a 200, then
    only 503s with ``Retry-After: 60``. The locustfile's reference lookups (urllib, before the users
    start) always get a 200 and are not counted."""

    def __init__(self) -> None:
        self.load_requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        agent = dict(scope["headers"]).get(b"user-agent", b"")
        status, headers = 200, [(b"content-type", b"application/json")]
        if not agent.startswith(b"Python-urllib"):
            self.load_requests += 1
            if self.load_requests == 1:
                status = 503
            elif self.load_requests > 2:
                status, headers = 503, [*headers, (b"retry-after", LONG_RETRY_AFTER.encode())]
        body = json.dumps({"embedding": VECTOR} if status == 200 else {"error": "overloaded"}).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def run_locust(url: str, user: str, results: Path, locustfile: str = "locust_overload.py") -> dict[str, Any]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOAD / locustfile), "--headless", "--only-summary",
        "--users", "1", "--spawn-rate", "1", "--run-time", f"{RUN_SECONDS}s", "--host", url,
        "--loglevel", "WARNING", "--results-file", str(results), user,
    ]
    done = subprocess.run(command, cwd=LOAD, capture_output=True, text=True, timeout=120, check=False)
    assert results.exists(), done.stdout + done.stderr
    loaded: dict[str, Any] = json.loads(results.read_text())
    return loaded


@pytest.mark.parametrize(("user", "honours_retry_after"), [("InteractiveUser", True), ("ImpatientUser", False)])
def test_users_wait_a_shed_requests_retry_after_and_records_count_it_as_shed(
    uvicorn_server: Callable[..., AbstractContextManager[str]], tmp_path: Path, user: str, honours_retry_after: bool
) -> None:
    service = ScriptedService()
    with uvicorn_server(service, lifespan="off") as url:
        results = run_locust(url, user, tmp_path / "results.json")
    if honours_retry_after:
        assert service.load_requests == 3  # after the first Retry-After: 60, nothing more in the run
    else:
        assert service.load_requests > 3  # retried at once, again and again
    answered = [FAILED, ACCEPTED] + [SHED] * (service.load_requests - 2)
    outcomes = [record[4] for record in results["records"]]
    # The window opens once the user is spawned and a request still in flight at the end is left out:
    # the records are a run of the answers, ending in shed ones.
    assert outcomes[-1] == SHED
    assert " ".join(outcomes) in " ".join(answered)
    assert sum(results["failures"].values()) == outcomes.count(FAILED)  # the 503 without Retry-After only


class CountingService:
    """``POST /embed`` answered at once, and ``/stats`` counting each as a batch: the locustfile's
    reference lookups as batches of one, the load's requests as batches of four."""

    def __init__(self) -> None:
        self.batches = {"1": 0, "4": 0}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/stats":
            body: dict[str, Any] = {"mode": "batched", "batchers": {"embed": {"batch_sizes": dict(self.batches)}}}
        else:
            agent = dict(scope["headers"]).get(b"user-agent", b"")
            self.batches["1" if agent.startswith(b"Python-urllib") else "4"] += 1
            body = {"embedding": VECTOR}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def test_the_results_count_the_batches_run_in_the_window_and_not_the_reference_lookups_before_it(
    uvicorn_server: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    service = CountingService()
    with uvicorn_server(service, lifespan="off") as url:
        results = run_locust(url, "InteractiveUser", tmp_path / "results.json", locustfile="locustfile.py")
    assert service.batches["1"] > 0  # the reference lookups ran, before the window
    assert list(results["batch_sizes"]) == ["4"]
    # One user: at most one request is in flight as the window opens and as it closes, on either side of a count
    assert abs(results["batch_sizes"]["4"] - len(results["records"])) <= 1
