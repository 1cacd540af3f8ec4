"""Locust load for the embedding service: any of the three frameworks, batched or not.

    locust -f load/locustfile.py --host http://127.0.0.1:8000 InteractiveUser BulkUser       # the mix, web UI
    locust -f load/locustfile.py --host http://127.0.0.1:8000 --headless -u 32 -r 32 -t 30s InteractiveUser
    locust -f load/locustfile.py --host http://127.0.0.1:8000 --headless -u 64 -r 64 -t 30s \\
        ConstantRateUser --rate 2

User classes (name them on the command line; with none named, Locust runs all three by weight):

* ``InteractiveUser`` (weight 3): one text per request, back to back (a closed loop: a user sends
  its next request when the last one is answered).
* ``BulkUser`` (weight 1): lists of 16 to 64 texts per request, back to back.
* ``ConstantRateUser`` (weight 1): one text per request at ``--rate`` requests per second per user
  (Locust's ``constant_throughput``), so a slow server faces the same offered load instead of
  being sent less of it. When a response takes longer than ``1/rate``, the user can only fall
  behind: the runner reports the rate achieved beside the rate offered.

Every user honours ``Retry-After``, as a well-behaved client does: after a 503 that carries it (the
server shedding load: its queue is full, or the request would wait past ``max_queue_delay_ms``), the
user waits that many seconds before its next request, or longer if its own pace asks for more.
``load/locust_overload.py`` adds one that retries at once.

Every response is checked (``catch_response``): status 200, JSON of the right shape, one vector of
384 floats per text, each of unit length. At the start of a run the locustfile asks the still idle
server for the vectors of ``corpus.REFERENCE_TEXTS``, one text at a time; under load, a quarter of
the single-text requests send a reference text and every bulk request carries two at random
positions, and their vectors must match the stored ones within 1e-4. So a response carrying
another caller's vector, a list answered out of order, or a vector that changed with its batch
company fails the request.

``--results-file PATH`` writes every request of the measurement window (from the moment all users
are spawned to the end of the run) as JSON: user class, start time, latency (seconds, unrounded),
texts, and its outcome (``outcomes.py``: accepted, shed by a 503 with Retry-After, or failed).
``load/compare.py`` computes its throughput and percentiles from the accepted ones and counts the
others apart. Beside them it writes how many batches of each size the server's batchers ran in the
window (from ``/stats`` as the window opens and as the run ends: none when unbatched), so the
reference requests at the start, one at a time, do not count as batches of one.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from corpus import REFERENCE_TEXTS, sentence
from locust import FastHttpUser, User, constant, constant_throughput, events, task
from locust.env import Environment
from outcomes import FAILED, Outcome, outcome, retry_after

DIMENSIONS = 384
TOLERANCE = 1e-4
REFERENCE_SHARE = 0.25
REFERENCES_PER_BULK = 2

_reference: dict[str, list[float]] = {}
_window: dict[str, float] = {}
_records: list[tuple[str, float, float, int, Outcome]] = []
_failures: Counter[str] = Counter()
_service: list[str] = []  # the host under test, once the run starts
_batches: Counter[int] = Counter()  # its batch-size counts when the window opened


def check(response: Any, texts: list[str], single: bool) -> str | None:
    """What is wrong with ``response`` to a request for ``texts``; None when it is right."""
    if response.status_code != 200:
        detail = getattr(response, "error", None) or (response.text or "")[:200]
        return f"HTTP {response.status_code}: {detail}"
    try:
        body = response.json()
        vectors = [body["embedding"]] if single else body["embeddings"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"malformed body: {exc!r}"
    if not isinstance(vectors, list) or len(vectors) != len(texts):
        return f"expected {len(texts)} vectors"
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        if not isinstance(vector, list) or len(vector) != DIMENSIONS:
            return f"vector {i} is not {DIMENSIONS} numbers"
        if abs(math.fsum(x * x for x in vector) - 1.0) > 1e-3:
            return f"vector {i} is not unit length"
        expected = _reference.get(text)
        if expected is not None and max(abs(a - b) for a, b in zip(vector, expected, strict=True)) > TOLERANCE:
            return f"vector {i} is not its reference text's vector"
    return None


def answer(response: Any) -> tuple[int, str | None]:
    """A Locust response's status and Retry-After header (0 and None when the request got no answer)."""
    headers = getattr(response, "headers", None)
    return getattr(response, "status_code", 0) or 0, headers.get("Retry-After") if headers else None


class _EmbedUser(FastHttpUser):
    """Sends its requests at its ``pace``; after a shed request, waits the answer's Retry-After first."""

    abstract = True
    request_name = "/embed"
    pace: ClassVar[Callable[[User], float]] = constant(0)  # the wait between requests when not told to back off
    honours_retry_after = True

    def on_start(self) -> None:
        self.rng = random.Random()
        self.backoff = 0.0  # the last answer's Retry-After, when it shed the request

    def post(self, texts: list[str], single: bool) -> None:
        body = {"text": texts[0]} if single else {"texts": texts}
        with self.client.post(
            "/embed", json=body, name=self.request_name, catch_response=True, context={"texts": len(texts)}
        ) as response:
            if self.honours_retry_after:
                self.backoff = retry_after(*answer(response)) or 0.0
            problem = check(response, texts, single)
            if problem is None:
                response.success()
            else:
                response.failure(problem)

    def wait_time(self) -> float:
        backoff, self.backoff = self.backoff, 0.0
        return max(backoff, self.pace())


class InteractiveUser(_EmbedUser):
    """One text per request, back to back."""

    weight = 3
    request_name = "/embed text"

    @task
    def one_text(self) -> None:
        share = self.rng.random() < REFERENCE_SHARE
        self.post([self.rng.choice(REFERENCE_TEXTS) if share else sentence(self.rng)], single=True)


class BulkUser(_EmbedUser):
    """Lists of 16 to 64 texts per request, back to back."""

    weight = 1
    request_name = "/embed texts"

    @task
    def many_texts(self) -> None:
        texts = [sentence(self.rng) for _ in range(self.rng.randint(16, 64))]
        positions = self.rng.sample(range(len(texts)), REFERENCES_PER_BULK)
        for position, text in zip(positions, self.rng.sample(REFERENCE_TEXTS, REFERENCES_PER_BULK), strict=True):
            texts[position] = text
        self.post(texts, single=False)


class ConstantRateUser(InteractiveUser):
    """One text per request at ``--rate`` requests per second (set at init from the option)."""

    weight = 1
    pace = constant_throughput(1.0)
    request_name = "/embed text (constant rate)"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--rate", type=float, default=1.0, help="ConstantRateUser: requests per second per user")
    parser.add_argument("--results-file", default="", help="write the measurement window's requests here as JSON")


@events.init.add_listener
def _on_init(environment: Environment, **kwargs: Any) -> None:
    rate = environment.parsed_options.rate if environment.parsed_options else 1.0
    if not rate > 0:
        raise ValueError(f"--rate must be > 0 requests per second, got {rate}")
    ConstantRateUser.pace = constant_throughput(rate)


@events.test_start.add_listener
def _fetch_references(environment: Environment, **kwargs: Any) -> None:
    # Asked one at a time before any user starts: each reference vector is computed alone.
    _reference.clear()
    url = f"{(environment.host or '').rstrip('/')}/embed"
    for text in REFERENCE_TEXTS:
        request = urllib.request.Request(url, json.dumps({"text": text}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            _reference[text] = json.load(response)["embedding"]


@events.test_start.add_listener
def _note_service(environment: Environment, **kwargs: Any) -> None:
    # Only a run that writes its results asks for the batch sizes: any other server need not have /stats.
    writing = environment.parsed_options is not None and environment.parsed_options.results_file
    _service[:] = [environment.host or ""] if writing else []


@events.spawning_complete.add_listener
def _open_window(user_count: int, **kwargs: Any) -> None:
    _records.clear()
    _failures.clear()
    _window["start"] = time.time()
    _batches.clear()
    _batches.update(batch_sizes(_service[0]) if _service else {})


def batch_sizes(host: str) -> Counter[int]:
    """How many batches of each size the service's batchers have run (its ``/stats``; none when unbatched)."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/stats", timeout=30) as response:
        batchers = json.load(response).get("batchers", {})
    return Counter({int(size): n for stats in batchers.values() for size, n in stats.get("batch_sizes", {}).items()})


@events.request.add_listener
def _record(
    name: str, response_time: float, exception: Exception | None, context: dict[str, Any], **kwargs: Any
) -> None:
    start = kwargs.get("start_time")
    if "start" not in _window or start is None or start < _window["start"]:
        return  # not in the measurement window
    ended = outcome(exception is None, *answer(kwargs.get("response")))
    _records.append((name, start, response_time / 1000.0, int(context.get("texts", 1)), ended))
    if ended == FAILED:  # shed requests are counted apart, not listed as failures
        _failures[str(exception)[:200]] += 1


@events.test_stop.add_listener
def _write_results(environment: Environment, **kwargs: Any) -> None:
    path = environment.parsed_options.results_file if environment.parsed_options else ""
    if not path or "start" not in _window:
        return
    end = time.time()
    done = [r for r in _records if r[1] + r[2] <= end]
    batches = batch_sizes(_service[0]) - _batches if _service else Counter()
    with open(path, "w") as f:
        json.dump({"window": [_window["start"], end], "records": done, "failures": dict(_failures),
                   "batch_sizes": {str(size): n for size, n in sorted(batches.items())}}, f)
