"""microbatch.web: the one HTTP mapping every adapter answers with."""

from __future__ import annotations

import logging

import pytest

from microbatch import (
    Batcher,
    BatcherClosed,
    BatchSizeMismatch,
    DeadlineExceeded,
    ItemTooLarge,
    Overloaded,
)
from microbatch.web import (
    HTTP_ERRORS,
    RequestTimeout,
    error_response,
    parse_request_timeout,
)


@pytest.mark.parametrize(
    ("exc", "status", "headers", "says"),
    [
        (Overloaded("full (max_queue_size=32)", retry_after=0.2), 503, {"Retry-After": "1"}, "overloaded"),  # never 0
        # rounded up
        (Overloaded("full (max_queue_size=32)", retry_after=2.01), 503, {"Retry-After": "3"}, "overloaded"),
        (BatcherClosed("batcher 'embed' is closed (max_queue_size=32)"), 503, {}, "shutting down"),
        (DeadlineExceeded("batcher 'embed' late (max_queue_size=32)"), 504, {}, "time limit"),
        (ItemTooLarge("item over max_batch_tokens=5 (max_queue_size=32)"), 413, {}, "too large"),
    ],
)
def test_each_http_error_has_a_status_headers_and_a_safe_message_with_the_detail_kept_for_logs(
    exc: Exception, status: int, headers: dict[str, str], says: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="microbatch.web"):
        response = error_response(exc)
    assert response is not None
    assert (response.status, response.headers, response.detail) == (status, headers, str(exc))
    assert says in response.error and response.body == {"error": response.error}
    assert "max_queue_size" not in response.error and "embed" not in response.error, "no internals for clients"
    assert str(exc) in caplog.text, "the detail goes to the log"
    assert isinstance(exc, HTTP_ERRORS)


@pytest.mark.parametrize("exc", [BatchSizeMismatch(2, 1), ValueError("x"), KeyError("k")])
def test_other_errors_have_no_http_answer_and_pass_through(exc: Exception) -> None:
    assert error_response(exc) is None


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, None), ("2.5", 2.5), (b"0.01", 0.01), ("1e3", 1000.0), ("5s", 5.0), ("5000ms", 5.0), (" 1.5 S ", 1.5),
     ("250MS", 0.25), (".5", 0.5)],
)
def test_a_request_timeout_header_is_seconds_or_a_time_with_a_unit(raw: str | bytes | None, seconds: float) -> None:
    assert parse_request_timeout(raw) == seconds


@pytest.mark.parametrize("raw", ["soon", "", "0", "0ms", "-1", "nan", "inf", "1e999", "5 min", "5m", b"\xff"])
def test_a_bad_request_timeout_header_is_a_value_error_that_quotes_it_and_names_the_header(raw: str | bytes) -> None:
    with pytest.raises(ValueError, match="^X-Deadline must be a time > 0 in seconds, like 2.5, 5s or 5000ms, got "):
        parse_request_timeout(raw, "X-Deadline")


def test_a_malformed_header_fails_only_a_batcher_call_and_that_failure_answers_400() -> None:
    timeout = RequestTimeout.read("soon")
    assert timeout.problem is not None and "'soon'" in timeout.problem
    calls: list[list[int]] = []

    def record(xs: list[int]) -> list[int]:
        calls.append(xs)
        return xs

    with Batcher(record, name="web") as batcher, timeout.deadline():
        with pytest.raises(DeadlineExceeded) as failure:
            batcher(1)
        stats = batcher.stats
    assert (calls, stats.submitted, stats.rejected) == ([], 0, 1), "refused at submission, never queued"
    response = timeout.response_for(failure.value)
    assert response is not None and (response.status, response.error) == (400, timeout.problem)
    overloaded = timeout.response_for(Overloaded("full", retry_after=1))
    assert overloaded is not None and overloaded.status == 503, "other errors keep their own answer"


def test_a_good_header_or_none_keeps_the_mapping() -> None:
    assert RequestTimeout.read("5000ms") == RequestTimeout(5.0)
    assert RequestTimeout.read("soon", header=None) == RequestTimeout(None), "the adapter ignores the header"
    response = RequestTimeout.read("2").response_for(DeadlineExceeded("late"))
    assert response is not None and response.status == 504
