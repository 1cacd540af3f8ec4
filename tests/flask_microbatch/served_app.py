"""The Flask app the flask_microbatch tests serve: in-process (test client, werkzeug, waitress) and in
a gunicorn worker (``gunicorn 'served_app:create_app()'``), so it imports nothing from pytest.

Its model is a :class:`Gate`: it records each batch's size, then holds the batch until the test
opens the gate, so a test decides exactly which requests are queued together (by reading
``stats.queue_depth``), never by timing. Over HTTP, ``GET /stats`` and ``POST /open`` do the same.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, current_app, jsonify, request

from flask_microbatch import Microbatch

mb = Microbatch()


class Gate:
    """A fake model: ``vec:<text>`` per text; each batch is recorded, then waits until :meth:`open`."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self.sizes: list[int] = []
        self.threads: list[str] = []

    def __call__(self, texts: list[str]) -> list[str]:
        self.sizes.append(len(texts))
        self.threads.append(threading.current_thread().name)
        self._opened.wait()
        return [f"vec:{text}" for text in texts]

    def open(self) -> None:
        self._opened.set()


@mb.batch()
def embed(texts: list[str]) -> list[str]:
    # Runs on the batcher's worker thread, inside the app's context pushed by the extension.
    gate: Gate = current_app.config["GATE"]
    return gate(texts)


def create_app(name: str = "served", **config: Any) -> Flask:
    """A fresh app with its own gate (``app.config["GATE"]``); ``config`` goes into ``app.config`` first."""
    app = Flask(name)
    app.config.update(GATE=Gate(), **config)
    mb.init_app(app)

    @app.post("/embed")
    def embed_one() -> Any:
        return jsonify(vector=embed(request.json["text"]))

    @app.post("/aembed")
    async def aembed_one() -> Any:
        return jsonify(vector=await embed.acall(request.json["text"]))

    @app.post("/embed_many")
    def embed_many() -> Any:
        return jsonify(vectors=embed.map(request.json["texts"]))

    @app.post("/aembed_many")
    async def aembed_many() -> Any:
        return jsonify(vectors=await embed.amap(request.json["texts"]))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")  # makes no batcher call

    @app.get("/stats")
    def stats() -> Any:
        s = embed.stats
        return jsonify(queue_depth=s.queue_depth, running=s.running, sizes=app.config["GATE"].sizes)

    @app.post("/open")
    def open_gate() -> Any:
        app.config["GATE"].open()
        return jsonify(opened=True)

    return app
