"""The embedding service on Flask, batched through flask_microbatch.

    gunicorn -k gthread --threads 64 -w 1 examples.flask_app:app   # batched (or waitress-serve --threads 64)
    MICROBATCH_MODE=unbatched gunicorn -k gthread --threads 64 -w 1 examples.flask_app:app
    MICROBATCH_REMOTE=redis://127.0.0.1:6379/0 gunicorn -k gthread --threads 64 -w 4 examples.flask_app:app

Batched, each request's thread calls ``embed(text)`` (one text) or ``embed.map(texts)`` (a list) and
blocks until the app's batcher has run its batch; give the server at least as many threads as
concurrent clients, since each waiting request holds one. Unbatched, each request's thread runs the
model itself, concurrently and without a lock: what a plain Flask app does. With ``MICROBATCH_REMOTE``
set, the app's ``MICROBATCH_REMOTE`` config sends ``embed``'s calls to the model hosts serving ``embed``
at that Redis URL, and no worker process loads the model. :func:`create_app` is an
app factory; every app it makes gets its own batcher. The API and its limits are in :mod:`examples._api`.
"""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from flask_microbatch import Microbatch
from microbatch.prometheus import StatsSource

from . import _api
from ._embedder import embed_texts, load_model, setup_worker_thread

__all__ = ["app", "create_app"]

mb = Microbatch()
embed = mb.batch(
    max_batch_size=_api.MAX_BATCH_SIZE, max_queue_size=_api.MAX_QUEUE_SIZE, name=_api.BATCHER_NAME,
    max_queue_delay_ms=_api.max_queue_delay_ms(), on_worker_start=setup_worker_thread, coalesce=_api.COALESCE,
)(embed_texts)


def create_app(mode: str | None = None, remote: str | None = None) -> Flask:
    """A new app; ``mode`` is ``"batched"`` or ``"unbatched"`` (default: the ``MICROBATCH_MODE`` variable),
    ``remote`` the Redis URL of the model hosts (default: ``MICROBATCH_REMOTE``; unset: the model runs here)."""
    mode = _api.resolve_mode(mode)
    remote = _api.resolve_remote(mode, remote)
    if remote is None:
        load_model()
    app = Flask(__name__)
    app.config["MICROBATCH_REMOTE"] = None if remote is None else {_api.BATCHER_NAME: remote}
    # Werkzeug refuses a longer declared body with 413 before reading it, and stops a streamed
    # (chunked) one at the limit, silently: one byte over lets _api see that it was cut and answer 413.
    app.config["MAX_CONTENT_LENGTH"] = _api.MAX_BODY_BYTES + 1
    if mode == "batched":
        mb.init_app(app)

    def batchers() -> dict[str, StatsSource]:
        return {_api.BATCHER_NAME: embed.batcher} if mode == "batched" else {}

    metrics = _api.Metrics(batchers)

    @app.post("/embed")
    def embed_view() -> tuple[Response, int] | Response:
        try:
            parsed = _api.parse_embed_request(request.get_data(cache=False))
        except _api.BadRequest as exc:
            return jsonify(exc.body), exc.status
        if mode == "unbatched":
            vectors = embed_texts(parsed.texts)
        elif parsed.single:
            vectors = [embed(parsed.texts[0])]
        else:
            vectors = embed.map(parsed.texts)
        return Response(_api.json_bytes(parsed.response(vectors)), mimetype=_api.JSON_CONTENT_TYPE)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(_api.health_body(mode))

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(_api.stats_body(mode, batchers()))

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(metrics.render(), content_type=_api.METRICS_CONTENT_TYPE)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        # Werkzeug's 404, 405, 413... as JSON, keeping their headers (Allow, ...).
        response = exc.get_response()
        response.set_data(json.dumps({"error": exc.description}))
        response.content_type = "application/json"
        return response

    return app


app = create_app()
