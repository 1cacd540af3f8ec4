"""The embedding service's HTTP contract, the same in every framework, through real servers on loopback
and the real model: shapes, the bad-input table, concurrent callers, stats, metrics, the unbatched switch."""

from __future__ import annotations

import json
import math
import select
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples import _api

FRAMEWORKS = ("starlette", "flask", "django-asgi", "django-wsgi")
TOLERANCE = 1e-5

Embed = Callable[[list[str]], list[list[float]]]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= TOLERANCE


def is_embedding(vector: Any) -> bool:
    return (
        isinstance(vector, list)
        and len(vector) == 384
        and all(isinstance(x, float) for x in vector)
        and math.isclose(math.fsum(x * x for x in vector), 1.0, abs_tol=1e-4)
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_text_and_a_list_of_texts_get_their_own_embeddings(framework: str, serve: Any, embed: Embed) -> None:
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today.", "", "cat"]
    expected = [embed([t])[0] for t in texts]
    with serve(framework) as url, httpx.Client(base_url=url) as client:
        one = client.post("/embed", json={"text": texts[0]})
        assert one.status_code == 200 and one.headers["content-type"].startswith("application/json")
        assert set(one.json()) == {"embedding"}
        assert is_embedding(one.json()["embedding"]) and close(one.json()["embedding"], expected[0])

        many = client.post("/embed", json={"texts": texts})
        assert many.status_code == 200
        vectors = many.json()["embeddings"]
        assert len(vectors) == len(texts)
        in_order = all(is_embedding(v) and close(v, e) for v, e in zip(vectors, expected, strict=True))
        assert in_order, "results in input order"

        limits = client.post("/embed", json={"texts": ["x" * _api.MAX_TEXT_CHARS] * _api.MAX_TEXTS})
        assert limits.status_code == 200, "the limits themselves are allowed"
        assert len(limits.json()["embeddings"]) == _api.MAX_TEXTS


# (case, method, path, body, expected status, a fragment of the error message)
BAD_INPUTS: list[tuple[str, str, str, bytes, int, str]] = [
    ("invalid JSON", "POST", "/embed", b'{"text": ', 400, "not valid JSON"),
    ("empty body", "POST", "/embed", b"", 400, "not valid JSON"),
    ("not UTF-8", "POST", "/embed", b'{"text": "\xff"}', 400, "not UTF-8"),
    ("nested too deep", "POST", "/embed", b"[" * 100_000, 400, "not valid JSON"),
    ("not an object", "POST", "/embed", b'["a"]', 422, "got an array"),
    ("missing field", "POST", "/embed", b"{}", 422, "missing field"),
    ("unknown field", "POST", "/embed", b'{"txt": "a"}', 422, '"txt"'),
    ("both fields", "POST", "/embed", b'{"text": "a", "texts": ["b"]}', 422, "not both"),
    ("text a number", "POST", "/embed", b'{"text": 5}', 422, "got a number"),
    ("text null", "POST", "/embed", b'{"text": null}', 422, "got null"),
    ("text a list", "POST", "/embed", b'{"text": ["a"]}', 422, "got an array"),
    ("texts a string", "POST", "/embed", b'{"texts": "abc"}', 422, "list of strings"),
    ("texts empty", "POST", "/embed", b'{"texts": []}', 422, "empty"),
    ("non-string in texts", "POST", "/embed", b'{"texts": ["a", 3]}', 422, '"texts"[1] must be a string'),
    ("over-long text", "POST", "/embed", json.dumps({"text": "x" * 2049}).encode(), 422, "2049 characters"),
    ("over-long in texts", "POST", "/embed", json.dumps({"texts": ["a", "x" * 2049]}).encode(), 422, '"texts"[1]'),
    ("lone surrogate", "POST", "/embed", b'{"text": "\\udc80"}', 422, "Unicode"),
    ("too many texts", "POST", "/embed", json.dumps({"texts": ["a"] * 65}).encode(), 413, "65 items"),
    ("body too large", "POST", "/embed", b'{"text": "' + b"a" * _api.MAX_BODY_BYTES + b'"}', 413, ""),
    ("wrong method", "GET", "/embed", b"", 405, ""),
    ("unknown path", "GET", "/embeddings", b"", 404, ""),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_bad_input_gets_its_4xx_with_a_json_error_and_the_server_keeps_serving(
    framework: str, serve: Any
) -> None:
    # One server per framework for the whole table; every mismatch is reported, not just the first.
    wrong = []
    with serve(framework) as url, httpx.Client(base_url=url) as client:
        for case, method, path, body, status, fragment in BAD_INPUTS:
            response = client.request(method, path, content=body)
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            if response.status_code != status or not isinstance(error, str) or fragment not in error:
                wrong.append(f"{case}: got {response.status_code} {response.text[:200]!r}, want {status} ~{fragment!r}")
        assert client.post("/embed", json={"text": "still serving"}).status_code == 200
        stats = client.get("/stats").json()["batchers"][_api.BATCHER_NAME]
    assert not wrong, "\n".join(wrong)
    assert stats["submitted"] == 1, "no bad input reached the batcher"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_concurrent_callers_each_receive_their_own_texts_embedding(
    framework: str, serve: Any, embed: Embed
) -> None:
    singles = [f"request number {i} is about {topic}" for i, topic in enumerate(["cats", "rain", "jazz", "tax"] * 4)]
    lists = [[f"list {i} item {j}" for j in range(2 + i)] for i in range(4)]
    expected = {t: v for t, v in zip(singles + sum(lists, []), embed(singles + sum(lists, [])), strict=True)}
    start = threading.Barrier(len(singles) + len(lists))

    def post(client: httpx.Client, body: dict[str, Any]) -> Any:
        start.wait(10)  # all requests in flight together, so the batcher sees them at once
        response = client.post("/embed", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    with serve(framework) as url, httpx.Client(base_url=url, limits=httpx.Limits(max_connections=64)) as client:
        with ThreadPoolExecutor(len(singles) + len(lists)) as pool:
            single_results = [pool.submit(post, client, {"text": t}) for t in singles]
            list_results = [pool.submit(post, client, {"texts": texts}) for texts in lists]
            for text, result in zip(singles, single_results, strict=True):
                assert close(result.result(30)["embedding"], expected[text]), f"{text!r} got another text's vector"
            for texts, result in zip(lists, list_results, strict=True):
                vectors = result.result(30)["embeddings"]
                assert len(vectors) == len(texts)
                assert all(close(v, expected[t]) for t, v in zip(texts, vectors, strict=True))
        stats = client.get("/stats").json()["batchers"][_api.BATCHER_NAME]
    items = len(singles) + sum(map(len, lists))
    assert (stats["submitted"], stats["completed"], stats["failed"]) == (items, items, 0), "all via the batcher"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_service_coalesces_identical_texts_and_answers_each_one(framework: str, serve: Any, embed: Embed) -> None:
    texts = ["a popular query", "another text", "a popular query", "a popular query"]
    expected = embed(["a popular query", "another text"])
    with serve(framework) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/embed", json={"texts": texts})
        stats = client.get("/stats").json()["batchers"][_api.BATCHER_NAME]
    assert response.status_code == 200, response.text
    vectors = response.json()["embeddings"]
    assert [close(v, expected[0 if t == texts[0] else 1]) for t, v in zip(texts, vectors, strict=True)] == [True] * 4
    assert (stats["submitted"], stats["completed"], stats["coalesced"]) == (4, 4, 2)
    assert stats["batch_sizes"] == {"2": 1}, "the model embedded two texts, not four"


def test_an_embedding_does_not_depend_on_its_batch_company(serve: Any) -> None:
    text = "A short sentence."
    # Companions of every length, so the batch is padded far beyond the text's own length.
    company = [" ".join(["padding"] * (3 + 2 * i)) for i in range(31)]
    with serve("starlette") as url, httpx.Client(base_url=url, timeout=30) as client:
        alone = client.post("/embed", json={"text": text}).json()["embedding"]
        for position in (0, 17, 31):
            batch = company[:position] + [text] + company[position:]
            before = client.get("/stats").json()["batchers"][_api.BATCHER_NAME]["batch_sizes"].get("32", 0)
            response = client.post("/embed", json={"texts": batch})
            assert response.status_code == 200, response.text
            vectors = response.json()["embeddings"]
            after = client.get("/stats").json()["batchers"][_api.BATCHER_NAME]["batch_sizes"]["32"]
            assert after == before + 1, "the 32 texts ran as one batch of 32"
            assert close(vectors[position], alone), f"alone vs in a batch of 32 at position {position}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_healthz_stats_and_metrics_report_the_batcher(framework: str, serve: Any) -> None:
    with serve(framework) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").json() == {"status": "ok", "mode": "batched", "model": "all-MiniLM-L6-v2"}
        client.post("/embed", json={"text": "one"})
        client.post("/embed", json={"texts": ["two", "three"]})
        stats = client.get("/stats").json()
        response = client.get("/metrics")
    assert stats["mode"] == "batched"
    assert stats["batchers"][_api.BATCHER_NAME]["completed"] == 3
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.labels.get("batcher") == _api.BATCHER_NAME
    }
    assert samples[("microbatch_completed_items_total", None)] == 3
    assert samples[("microbatch_batch_size_sum", None)] == 3
    assert samples[("microbatch_queue_depth", None)] == 0
    assert samples[("microbatch_queue_wait_seconds_count", None)] >= 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_unbatched_switch_serves_the_same_api_without_a_batcher(framework: str, serve: Any, embed: Embed) -> None:
    with serve(framework, "unbatched") as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").json()["mode"] == "unbatched"
        one = client.post("/embed", json={"text": "same vectors"}).json()["embedding"]
        many = client.post("/embed", json={"texts": ["same vectors", "either way"]}).json()["embeddings"]
        bad = client.post("/embed", json={"texts": []})
        stats = client.get("/stats").json()
        assert (stats["mode"], stats["batchers"], type(stats["pid"])) == ("unbatched", {}, int)
        metrics = client.get("/metrics").text
    assert close(one, embed(["same vectors"])[0]) and close(many[1], embed(["either way"])[0])
    assert bad.status_code == 422 and "error" in bad.json()
    assert "batcher=" not in metrics, "no batcher, no samples"


def _refusal_of(url: str, head: str, chunks: Iterator[bytes], cap: int) -> tuple[bytes, int]:
    """Send ``head`` then ``chunks`` until the server answers (or ``cap`` bytes are sent): the response's
    first bytes and how many body bytes went out before it came. A server that reads the whole body
    before answering never answers within the cap."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(head.encode())
        sent = 0
        conn.setblocking(False)
        pending = b""
        while True:
            readable, writable, _ = select.select([conn], [conn] if sent < cap else [], [], 30)
            if readable:
                return _response(conn), sent
            if not writable:
                raise AssertionError(f"no answer after {sent} body bytes")
            pending = pending or next(chunks)
            try:
                n = conn.send(pending)
            except (BrokenPipeError, ConnectionResetError):  # the server stopped reading and closed
                return _response(conn), sent
            sent += n
            pending = pending[n:]


def _response(conn: socket.socket) -> bytes:
    """One whole response from ``conn``: its head and its body (by Content-Length, chunks, or until closed)."""
    conn.settimeout(30)
    data = b""
    while not _complete(data):
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the response never ended: {data[:300]!r}") from None
        if not chunk:
            break
        data += chunk
    return data


def _complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
        if name.strip().lower() == b"transfer-encoding" and value.strip().lower() == b"chunked":
            return body.endswith(b"0\r\n\r\n")
    return False  # the body ends when the connection closes


def _json_chunks() -> Iterator[bytes]:
    yield b'{"text": "'
    while True:
        yield b"a" * 65536


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(framework: str, serve: Any) -> None:
    declared = 256 << 20
    head = (
        "POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with serve(framework) as url:
        # Only 1 MiB of the 256 MiB promised is ever sent: the answer must come without the rest.
        answer, _ = _refusal_of(url, head, _json_chunks(), cap=_api.MAX_BODY_BYTES)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"error"' in answer
        assert httpx.get(f"{url}/healthz").status_code == 200, "the server keeps serving"


@pytest.mark.parametrize("framework", ["starlette", "flask", "django-asgi"])
def test_a_streamed_body_is_refused_once_past_the_limit(framework: str, serve: Any) -> None:
    head = "POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"

    def chunked() -> Iterator[bytes]:
        for chunk in _json_chunks():
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)

    with serve(framework) as url:
        # An endless body: a server that reads it all before answering never answers within 64 MiB.
        answer, sent = _refusal_of(url, head, chunked(), cap=64 << 20)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert httpx.get(f"{url}/healthz").status_code == 200, "the server keeps serving"
    # What is read is the limit plus the socket buffers in between, far from the 64 MiB offered.
    assert sent < 32 << 20, f"{sent} bytes went out before the refusal"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    ("case", "body", "fragment"),
    [
        ("UTF-16 with a BOM", '{"text": "a"}'.encode("utf-16"), "not UTF-8"),
        ("UTF-16 without a BOM", '{"text": "a"}'.encode("utf-16-le"), "not valid JSON"),
        ("UTF-32", '{"text": "a"}'.encode("utf-32"), "not UTF-8"),
        ("UTF-8 with a BOM", b'\xef\xbb\xbf{"text": "a"}', "byte order mark"),
    ],
    ids=["utf16-bom", "utf16-le", "utf32", "utf8-bom"],
)
def test_a_body_that_is_not_plain_utf8_json_is_a_400(
    framework: str, case: str, body: bytes, fragment: str, serve: Any
) -> None:
    with serve(framework) as url:
        response = httpx.post(f"{url}/embed", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, (case, response.text)
    assert fragment in response.json()["error"], case
