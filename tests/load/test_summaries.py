"""How the load scripts count a step's requests: accepted ones make the throughput and the latencies,
a 503 with Retry-After is shed (counted apart), anything else that did not pass is a failure."""

from __future__ import annotations

import math
import re
from typing import Any

import overload
import pytest
import steps
from outcomes import ACCEPTED, FAILED, SHED, outcome, retry_after


@pytest.mark.parametrize(
    ("passed", "status", "header", "expected"),
    [
        (True, 200, None, ACCEPTED),
        (False, 503, "1", SHED),
        (False, 503, "0", SHED),  # "come back now" is still the server shedding the request
        (False, 503, "2.5", SHED),
        (False, 503, None, FAILED),  # a 503 that says nothing about when to come back
        (False, 503, "soon", FAILED),
        (False, 503, "-1", FAILED),
        (False, 503, "inf", FAILED),
        (False, 500, "1", FAILED),  # Retry-After on another status is not shedding
        (False, 200, None, FAILED),  # a 200 that failed the response checks (wrong vector, bad shape)
        (False, 0, None, FAILED),  # no answer at all: connection refused or reset
    ],
)
def test_a_request_is_shed_only_when_a_503_says_when_to_come_back(
    passed: bool, status: int, header: str | None, expected: str
) -> None:
    assert outcome(passed, status, header) == expected


def test_retry_after_is_the_seconds_of_a_503_only() -> None:
    assert [retry_after(503, "3"), retry_after(503, "0.5"), retry_after(429, "3"), retry_after(503, None)] == [
        3.0, 0.5, None, None,
    ]


def record(latency_s: float, ended: str, name: str = "/embed text", texts: int = 1) -> list[Any]:
    """One request as the locustfile's ``--results-file`` holds it: name, start, latency (s), texts, outcome.

    The tests' latencies are sums of powers of two, so they convert to milliseconds exactly.
    """
    return [name, 1000.0, latency_s, texts, ended]


def results(*records: list[Any]) -> dict[str, Any]:
    return {"window": [1000.0, 1010.0], "records": list(records), "failures": {}}


def test_shed_requests_are_neither_throughput_latency_nor_failures() -> None:
    step = steps.summarise(
        results(
            record(0.125, ACCEPTED), record(0.25, ACCEPTED), record(0.5, ACCEPTED),
            *[record(0.001, SHED) for _ in range(6)],  # refused at once: they would drag every percentile down
            record(0.004, FAILED),
        ),
        "closed", 64, "batched",
    )
    assert (step.requests, step.texts, step.shed, step.failures) == (3, 3, 6, 1)
    assert (step.p50_ms, step.p95_ms, step.p99_ms) == (250, 500, 500)
    assert (step.texts_per_s, step.requests_per_s) == (3 / 10, 3 / 10)  # over the 10 s window


def test_a_mixed_step_counts_bulk_texts_and_shed_bulk_requests() -> None:
    step = steps.summarise(
        results(
            record(0.0625, ACCEPTED), record(0.75, ACCEPTED, "/embed texts", 40),
            record(0.001, SHED, "/embed texts", 64), record(0.001, SHED), record(0.03, FAILED, "/embed texts", 16),
        ),
        "mixed", 32, "batched",
    )
    assert (step.requests, step.texts, step.shed, step.failures) == (2, 41, 2, 1)
    assert (step.p50_ms, step.bulk_p95_ms) == (62.5, 750)


def test_a_step_with_only_shed_requests_has_no_latencies() -> None:
    step = steps.summarise(results(record(0.001, SHED), record(0.001, SHED)), "closed", 1, "batched")
    assert (step.requests, step.shed, step.failures, step.texts_per_s) == (0, 2, 0, 0.0)
    assert math.isnan(step.p50_ms)


def cells_of(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())  # columns are two spaces apart; "closed loop", "p50 ms" hold one


def test_the_table_and_notes_show_shed_apart_from_failures() -> None:
    batched = steps.summarise(
        results(record(0.125, ACCEPTED), *[record(0.001, SHED) for _ in range(3)], record(0.01, FAILED)),
        "closed", 64, "batched",
    )
    unbatched = steps.summarise(results(record(0.5, ACCEPTED), record(0.01, FAILED)), "closed", 64, "unbatched")
    batched.ceiling = unbatched.ceiling = 100.0
    header, _, *rows = steps.table([batched, unbatched]).splitlines()
    cells = [dict(zip(cells_of(header), cells_of(row), strict=True)) for row in rows]
    assert [(row["mode"], row["fails"], row["shed"], row["req/s"]) for row in cells] == [
        ("batched", "1", "3", "0.1"), ("unbatched", "1", "0", "0.1"),
    ]
    assert "closed 64u batched 60%" in "\n".join(steps.notes([batched, unbatched]))


def test_the_overload_table_counts_shed_requests_as_refused_and_other_failures_apart() -> None:
    row = overload.summary(
        "bounded", "PoliteUser",
        results(record(0.75, ACCEPTED), *[record(0.001, SHED) for _ in range(5)], record(0.004, FAILED)), 1.25,
    )
    assert (row["accepted/s"], row["refused/s"], row["other"], row["p99"]) == (1 / 10, 5 / 10, 1, 750)
