"""What the load scripts print and draw, and how their own HTTP client treats a server that sheds load."""

from __future__ import annotations

import json
import threading
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import compare
import pytest
import scale_out
from steps import Step


def row_result(
    row: scale_out.Row, texts_per_s: float, p99_ms: float, batch: float | None, rss: float
) -> scale_out.Result:
    step = Step("closed", 64, "batched", 10.0, int(texts_per_s * 10), int(texts_per_s * 10), 0, 0, 500.0, 600.0, p99_ms)
    return scale_out.Result(row, step, batch, 250.0, rss)


def four_rows() -> list[scale_out.Result]:
    return [
        row_result(scale_out.ROWS[0], 100.0, 800.0, 26.0, 600.0),
        row_result(scale_out.ROWS[1], 90.0, 1000.0, 9.0, 2400.0),
        row_result(scale_out.ROWS[2], 98.0, 700.0, 28.0, 780.0),
        row_result(scale_out.ROWS[3], 95.0, 750.0, 27.5, 800.0),
    ]


def test_the_scale_out_report_compares_the_host_row_with_one_worker_and_with_a_model_per_worker() -> None:
    text = scale_out.report(four_rows(), None)
    assert "-w 4 + host vs -w 1: 0.98x the texts/s (target >= 0.95), p99 0.88x (target <= 1.2)" in text
    assert "-w 4 + host vs -w 4 in-process: 0.33x the RSS (target <= 0.5)" in text
    assert "mean batch at the host: 28.0 (target >= 24)" in text


def test_the_scale_out_plot_draws_every_row(tmp_path: Path) -> None:
    path = tmp_path / "scale-out.png"
    scale_out.plot(four_rows()[:3], path)  # a run of some rows only (--rows 123) still draws
    assert path.read_bytes().startswith(b"\x89PNG")


class Shedding(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After: 0 to the first ``sheds`` requests, then 200 with a JSON body."""

    sheds = 0
    seen = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.seen += 1
        if cls.seen <= cls.sheds:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            body = b'{"error": "overloaded"}'
        else:
            self.send_response(200)
            body = json.dumps({"attempt": cls.seen}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def shedding_server() -> Iterator[tuple[str, type[Shedding]]]:
    handler = type("Handler", (Shedding,), {"sheds": 2, "seen": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_warm_up_client_waits_out_a_shed_request_and_asks_again(
    shedding_server: tuple[str, type[Shedding]],
) -> None:
    url, handler = shedding_server
    assert compare.http_json(f"{url}/embed", {"text": "a"}, sheds=5) == {"attempt": 3}
    assert handler.seen == 3


def test_without_sheds_allowed_a_503_is_an_error(shedding_server: tuple[str, type[Shedding]]) -> None:
    url, handler = shedding_server
    with pytest.raises(urllib.error.HTTPError) as raised:
        compare.http_json(f"{url}/embed", {"text": "a"})
    raised.value.close()
    assert raised.value.code == 503 and handler.seen == 1
