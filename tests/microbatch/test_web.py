"""microbatch.web: the one HTTP mapping every adapter answers with."""

from __future__ import annotations

import pytest

from microbatch import BatcherClosed, BatchSizeMismatch, DeadlineExceeded, ItemTooLarge, Overloaded
from microbatch.web import HTTP_ERRORS, error_response, parse_request_timeout


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (Overloaded("full", retry_after=0.2), 503, {"Retry-After": "1"}),  # never 0: that invites a retry storm
        (Overloaded("full", retry_after=2.01), 503, {"Retry-After": "3"}),  # rounded up, whole seconds
        (BatcherClosed("closed"), 503, {}),
        (DeadlineExceeded("late"), 504, {}),
        (ItemTooLarge("too long"), 413, {}),
    ],
)
def test_each_http_error_has_a_status_headers_and_a_json_body_with_its_message(
    exc: Exception, status: int, headers: dict[str, str]
) -> None:
    response = error_response(exc)
    assert response is not None
    assert (response.status, response.headers, response.body) == (status, headers, {"error": str(exc)})
    assert isinstance(exc, HTTP_ERRORS)


@pytest.mark.parametrize("exc", [BatchSizeMismatch(2, 1), ValueError("x"), KeyError("k")])
def test_other_errors_have_no_http_answer_and_pass_through(exc: Exception) -> None:
    assert error_response(exc) is None


@pytest.mark.parametrize(("raw", "seconds"), [(None, None), ("2.5", 2.5), (b"0.01", 0.01), ("1e3", 1000.0)])
def test_a_request_timeout_header_is_a_positive_number_of_seconds(raw: str | bytes | None, seconds: float) -> None:
    assert parse_request_timeout(raw) == seconds


@pytest.mark.parametrize("raw", ["soon", "", "0", "-1", "nan", "inf", "1e999", b"\xff"])
def test_a_bad_request_timeout_header_is_a_value_error_that_quotes_it(raw: str | bytes) -> None:
    with pytest.raises(ValueError, match="X-Request-Timeout must be a number of seconds > 0, got "):
        parse_request_timeout(raw)
