"""The embedding service's HTTP API, framework-neutral: validation, JSON shapes, mode, stats and metrics.

Every example app is a thin layer over this module, so the three frameworks answer alike:

* ``POST /embed`` with ``{"text": "..."}`` -> ``{"embedding": [384 floats]}``, or with
  ``{"texts": ["...", ...]}`` -> ``{"embeddings": [[384 floats], ...]}`` in input order (one
  ``map``/``amap`` of the batcher). Vectors are unit length.
* ``GET /healthz`` -> ``{"status": "ok", "mode": ..., "model": ...}`` once the model is loaded (here, or
  at the model hosts when ``MICROBATCH_REMOTE`` is set).
* ``GET /stats`` -> ``{"mode": ..., "pid": ..., "batchers": {"embed": Stats.as_dict()}}`` (no batchers
  unbatched; ``pid`` tells a server's worker processes apart).
* ``GET /metrics`` -> Prometheus text (:class:`microbatch.prometheus.BatcherCollector`).

Input limits, each refused with a 4xx and a JSON body ``{"error": "..."}`` that says what is wrong:

* 400: the body is not JSON, or not UTF-8 (UTF-16 and UTF-32 included), or starts with a byte order
  mark (RFC 8259: JSON on the network is UTF-8, without one).
* 413: the body is over :data:`MAX_BODY_BYTES`, or ``texts`` has more than :data:`MAX_TEXTS` items. A
  declared ``Content-Length`` over the limit is refused before the body is read, and a streamed body
  is read no further than the limit (:func:`check_declared_length`, :func:`too_large`).
* 422: the body is not an object; neither or both of ``text``/``texts``; another field; ``texts`` not a
  list or empty; a text that is not a string, has more than :data:`MAX_TEXT_CHARS` characters (over-long
  texts are rejected, never silently truncated), or holds a lone surrogate (not encodable Unicode).

An empty string is a valid text. Within the limit, the model itself reads only a text's first 256
word pieces (roughly 1000-1500 characters of English): what follows does not change the vector.
The batcher's own refusals come from the adapters: overload -> 503 with ``Retry-After``, a passed
``X-Request-Timeout`` -> 504.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from microbatch.prometheus import BatcherCollector, StatsSource

from ._embedder import MODEL_NAME

__all__ = [
    "BATCHER_NAME",
    "MAX_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "MAX_QUEUE_DELAY_MS",
    "MAX_QUEUE_DELAY_MS_ENV",
    "MAX_QUEUE_SIZE",
    "MAX_TEXTS",
    "MAX_TEXT_CHARS",
    "METRICS_CONTENT_TYPE",
    "MODE_ENV",
    "REMOTE_ENV",
    "BadRequest",
    "EmbedRequest",
    "Metrics",
    "JSON_CONTENT_TYPE",
    "check_declared_length",
    "health_body",
    "json_bytes",
    "max_queue_delay_ms",
    "parse_embed_request",
    "resolve_mode",
    "resolve_remote",
    "stats_body",
    "too_large",
]

MAX_BODY_BYTES: Final = 1 << 20
MAX_TEXTS: Final = 64
MAX_TEXT_CHARS: Final = 2048

MODE_ENV: Final = "MICROBATCH_MODE"
MODES: Final = ("batched", "unbatched")
# A Redis URL: the batcher's calls go to the model hosts serving BATCHER_NAME there, and the model
# loads only in them (microbatch serve examples._embedder:embed_texts --url URL --name embed --max-batch-size 32).
REMOTE_ENV: Final = "MICROBATCH_REMOTE"

BATCHER_NAME: Final = "embed"
# The one batcher's settings in every framework. The queue holds about five seconds of work on a
# 2-core CPU: beyond that a client is better told 503 + Retry-After than kept waiting.
MAX_BATCH_SIZE: Final = 32
MAX_QUEUE_SIZE: Final = 2048
# Admission by predicted wait: a request the batcher predicts would wait over a second in the queue
# is answered 503 + Retry-After at once, so accepted requests keep about a second of queueing under
# any overload (the queue size alone let them wait 5-11 s). The variable overrides it ("off": none).
MAX_QUEUE_DELAY_MS: Final = 1000.0
MAX_QUEUE_DELAY_MS_ENV: Final = "EMBED_MAX_QUEUE_DELAY_MS"
# Identical texts in flight at once (a popular query, a retried request) are embedded once; each
# caller still gets its own copy of the vector.
COALESCE: Final = True

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
JSON_CONTENT_TYPE: Final = "application/json"

_JSON_TYPES = {
    str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array", dict: "an object",
}


class BadRequest(Exception):
    """Raised for a request the client must fix; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def body(self) -> dict[str, str]:
        return {"error": str(self)}


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """A valid ``POST /embed``: the texts to embed, and whether it was the single-``text`` form."""

    texts: list[str]
    single: bool

    def response(self, vectors: list[list[float]]) -> dict[str, Any]:
        """The response body for this request's vectors (one per text, in order)."""
        return {"embedding": vectors[0]} if self.single else {"embeddings": vectors}


def too_large(size: int | None = None) -> BadRequest:
    """The 413 for a body over :data:`MAX_BODY_BYTES` (``size``: its length, when known)."""
    has = "the body is" if size is None else f"the body has {size} bytes,"
    return BadRequest(413, f"{has} over the limit of {MAX_BODY_BYTES} bytes: send fewer or shorter texts")


def check_declared_length(value: str | bytes | None) -> None:
    """Refuse a declared ``Content-Length`` over the limit before reading any of the body."""
    try:
        declared = int(value) if value is not None else 0
    except ValueError:
        return  # a malformed length is the server's to refuse
    if declared > MAX_BODY_BYTES:
        raise too_large(declared)


def parse_embed_request(body: bytes) -> EmbedRequest:
    """Validate a ``POST /embed`` body; raises :class:`BadRequest` with the status and a message that names the fix."""
    if len(body) > MAX_BODY_BYTES:
        raise too_large(len(body))
    try:
        # Strict UTF-8: json.loads(bytes) would also take UTF-16/32 and a BOM, which RFC 8259 excludes.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"the body is not UTF-8 (send JSON encoded as UTF-8): {exc}") from None
    if text.startswith("\ufeff"):
        raise BadRequest(400, "the body starts with a byte order mark: send UTF-8 JSON without one")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting recurses
        raise BadRequest(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, f'the body must be a JSON object with "text" or "texts", got {_json_type(data)}')
    unknown = sorted(set(data) - {"text", "texts"})
    if unknown:
        raise BadRequest(422, f'unexpected field(s) {", ".join(map(json.dumps, unknown))}: send "text" or "texts"')
    if "text" in data and "texts" in data:
        raise BadRequest(422, 'send either "text" (one string) or "texts" (a list of strings), not both')
    if "text" in data:
        return EmbedRequest([_check_text(data["text"], '"text"')], single=True)
    if "texts" not in data:
        raise BadRequest(422, 'missing field: send {"text": "..."} or {"texts": ["...", ...]}')
    texts = data["texts"]
    if not isinstance(texts, list):
        raise BadRequest(422, f'"texts" must be a list of strings, got {_json_type(texts)}')
    if not texts:
        raise BadRequest(422, '"texts" is empty: send at least one text')
    if len(texts) > MAX_TEXTS:
        raise BadRequest(
            413, f'"texts" has {len(texts)} items; the limit is {MAX_TEXTS} per request: split it into several requests'
        )
    return EmbedRequest([_check_text(text, f'"texts"[{i}]') for i, text in enumerate(texts)], single=False)


def _check_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(422, f"{where} must be a string, got {_json_type(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise BadRequest(422, f"{where} has {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(422, f"{where} is not valid Unicode (it holds a lone surrogate escape)") from None
    return value


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def json_bytes(body: Any) -> bytes:
    """``body`` as JSON: the embedding responses, 384 floats a text, cost the server several times less
    with orjson than with the standard library (the same numbers, written by the shortest round trip)."""
    return orjson.dumps(body)


def resolve_mode(mode: str | None = None) -> str:
    """``mode``, or else the ``MICROBATCH_MODE`` environment variable, or else ``"batched"``; checked."""
    value = mode if mode is not None else os.environ.get(MODE_ENV, "batched")
    if value not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got {value!r}")
    return value


def resolve_remote(mode: str, remote: str | None = None) -> str | None:
    """``remote``, or else the ``MICROBATCH_REMOTE`` environment variable: the Redis URL of the model hosts,
    or None to run the model in this process. Only a batched service can send its calls to hosts."""
    value = remote if remote is not None else os.environ.get(REMOTE_ENV) or None
    if value is not None and mode != "batched":
        raise ValueError(f"{REMOTE_ENV} sends the batcher's calls to model hosts: it needs {MODE_ENV}=batched")
    return value


def max_queue_delay_ms() -> float | None:
    """The batcher's ``max_queue_delay_ms``: :data:`MAX_QUEUE_DELAY_MS`, or the environment variable's
    value (milliseconds, or ``off`` for no bound, as in a load run's comparison)."""
    raw = os.environ.get(MAX_QUEUE_DELAY_MS_ENV)
    if raw is None:
        return MAX_QUEUE_DELAY_MS
    if raw.strip().lower() == "off":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{MAX_QUEUE_DELAY_MS_ENV} must be a number of milliseconds or 'off', got {raw!r}") from None


def health_body(mode: str) -> dict[str, str]:
    return {"status": "ok", "mode": mode, "model": MODEL_NAME}


def stats_body(mode: str, batchers: Mapping[str, StatsSource]) -> dict[str, Any]:
    return {"mode": mode, "pid": os.getpid(), "batchers": {name: b.stats.as_dict() for name, b in batchers.items()}}


class Metrics:
    """An app's own Prometheus registry (not the global one, so several apps can live in one process)."""

    def __init__(self, batchers: Callable[[], Mapping[str, StatsSource]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(BatcherCollector(batchers))

    def render(self) -> bytes:
        """The exposition text, served with :data:`METRICS_CONTENT_TYPE`."""
        return generate_latest(self.registry)
