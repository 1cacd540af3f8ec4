"""flask_microbatch sends a batched function to the hosts of its name when ``MICROBATCH_REMOTE`` says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask, jsonify, request

from flask_microbatch import Microbatch
from microbatch.remote import RemoteBatcher, RemoteError
from tests._support import wait_until

from .conftest import RedisServer


def make_app(remote: object) -> tuple[Flask, Any]:
    mb = Microbatch()

    @mb.batch(name="t", timeout=5)
    def embed(texts: list[str]) -> list[Any]:
        raise AssertionError("a remote batched function never runs in the web process")

    @mb.batch(name="here")
    def shout(texts: list[str]) -> list[str]:
        return [text.upper() for text in texts]

    app = Flask("remote_app")
    app.config["MICROBATCH_REMOTE"] = remote
    mb.init_app(app)

    @app.post("/embed")
    def embed_view() -> Any:
        return jsonify({"result": embed(request.get_json()["text"])})

    @app.post("/shout")
    def shout_view() -> Any:
        return jsonify({"result": shout(request.get_json()["text"])})

    return app, embed


def test_a_named_function_goes_to_its_hosts_and_the_others_stay_in_process(
    start_host: Callable[..., Any], redis_server: RedisServer, wsgi_server: Callable[..., Any]
) -> None:
    host = start_host("echo")
    app, embed = make_app({"t": redis_server.url})
    with wsgi_server(app) as url, ThreadPoolExecutor(8) as pool:
        texts = [f"text {i}" for i in range(32)]
        answers = list(pool.map(lambda t: requests.post(f"{url}/embed", json={"text": t}, timeout=10), texts))
        assert [a.json() for a in answers] == [{"result": [t, host.pid]} for t in texts]
        assert requests.post(f"{url}/shout", json={"text": "hi"}, timeout=10).json() == {"result": "HI"}
        with app.app_context():
            assert isinstance(embed.batcher, RemoteBatcher) and embed.batcher.timeout == 5
            # The host's stats, as it last published them, read through the remote batcher.
            wait_until(lambda: embed.stats.completed == 32, "the host reports the 32 calls")
        redis_server.stop()
        down = requests.post(f"{url}/embed", json={"text": "x"}, timeout=10)
        assert down.status_code == 503 and "unreachable" in down.json()["error"]


def test_a_url_sends_every_batched_function_of_the_app(
    start_host: Callable[..., Any], redis_server: RedisServer, wsgi_server: Callable[..., Any]
) -> None:
    start_host("echo", name="here")  # the host of "shout"'s name echoes instead of shouting
    app, _ = make_app(redis_server.url)
    with wsgi_server(app) as url:
        answer = requests.post(f"{url}/shout", json={"text": "hi"}, timeout=10)
        assert answer.json()["result"][0] == "hi"


def test_return_exceptions_works_through_a_remote_batcher_too(
    start_host: Callable[..., Any], redis_server: RedisServer
) -> None:
    start_host("fails_on_boom", name="t")
    app, embed = make_app({"t": redis_server.url})
    with app.app_context():
        ok, boom = embed.map(["a", "boom"], return_exceptions=True)
        assert ok == "A" and isinstance(boom, RemoteError) and boom.type_name == "ValueError"
        boom, ok = asyncio.run(embed.amap(["boom", "b"], return_exceptions=True))
        assert ok == "B" and isinstance(boom, RemoteError)
        with pytest.raises(RemoteError):
            embed.map(["c", "boom"])


@pytest.mark.parametrize("bad", ["127.0.0.1:6379", {"t": 6379}, ["redis://x"]])
def test_a_malformed_remote_setting_is_refused_at_init_app_naming_the_key(bad: object) -> None:
    with pytest.raises(ValueError, match="MICROBATCH_REMOTE"):
        make_app(bad)
