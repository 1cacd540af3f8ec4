"""flask_microbatch through Flask's own machinery: the test client, app contexts, app factories."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, current_app, jsonify, request

import flask_microbatch
from flask_microbatch import BatchedFunction, Microbatch
from microbatch import Batcher, BatcherClosed, DeadlineExceeded, Overloaded
from microbatch.web import ErrorResponse, error_response

MakeApp = Callable[..., Flask]
WAIT = 10.0


def post(app: Flask, path: str, text: str, **headers: str) -> Any:
    return app.test_client().post(path, json={"text": text}, headers=headers)


def test_all_matches_the_exports() -> None:
    public = {name for name in vars(flask_microbatch) if not name.startswith("_")}
    assert set(flask_microbatch.__all__) == public - {"annotations"}


@pytest.mark.parametrize("path", ["/embed", "/aembed"])
def test_concurrent_requests_batch_together_each_gets_its_own_result(
    make_app: MakeApp, served_app: Any, in_thread: Any, until: Any, path: str
) -> None:
    app = make_app()
    gate = app.config["GATE"]
    with app.app_context():
        embed = served_app.embed
        first = in_thread(post, app, path, "t0")
        until(lambda: embed.stats.running == 1, "the first request's batch is running")
        rest = [in_thread(post, app, path, f"t{i}") for i in range(1, 6)]
        until(lambda: embed.stats.queue_depth == 5, "five requests are queued behind it")
        gate.open()
        responses = [call.result() for call in [first, *rest]]
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json["vector"] for r in responses] == [f"vec:t{i}" for i in range(6)]
    assert gate.sizes == [1, 5]


@pytest.mark.parametrize("path", ["/embed_many", "/aembed_many"])
def test_map_runs_one_request_of_many_items(make_app: MakeApp, path: str) -> None:
    app = make_app()
    app.config["GATE"].open()
    response = app.test_client().post(path, json={"texts": ["a", "b", "c"]})
    assert response.json == {"vectors": ["vec:a", "vec:b", "vec:c"]}
    assert app.config["GATE"].sizes == [3]


def test_map_and_amap_return_exceptions_put_each_failing_items_error_in_its_place() -> None:
    app = Flask("return_exceptions")
    mb = Microbatch(app)

    @mb.batch(max_batch_size=8)
    def shout(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("cannot shout 'bad'")
        return [item.upper() for item in items]

    with app.app_context():
        got = shout.map(["a", "bad", "c"], return_exceptions=True)
        agot = asyncio.run(shout.amap(["bad", "d"], return_exceptions=True))
        with pytest.raises(ValueError, match="cannot shout 'bad'"):
            shout.map(["e", "bad"])  # without it, the first failure fails the map
    mb.close(app)
    assert [got[0], got[2], agot[1]] == ["A", "C", "D"]
    assert [type(e) for e in (got[1], agot[0])] == [ValueError, ValueError]


def test_batch_function_runs_on_the_worker_inside_its_app_context(make_app: MakeApp) -> None:
    app = make_app()
    app.config["GATE"].open()
    assert post(app, "/embed", "x").json == {"vector": "vec:x"}  # the gate was found through current_app
    assert app.config["GATE"].threads[0].startswith("microbatch-served.embed")


def test_constructor_with_app_and_init_app_are_equivalent() -> None:
    direct, factory = Flask("direct"), Flask("factory")
    mb = Microbatch(direct)
    later = Microbatch()
    later.init_app(factory)
    assert direct.extensions["microbatch"].owner is mb
    assert factory.extensions["microbatch"].owner is later
    assert not hasattr(mb, "app") and not hasattr(later, "app")


def test_registering_twice_names_the_fix() -> None:
    app = Flask("twice")
    mb = Microbatch(app)
    with pytest.raises(RuntimeError, match="already been registered.*use that instance"):
        mb.init_app(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        Microbatch(app)


def test_config_defaults_are_set_without_overriding_the_app() -> None:
    app = Flask("config")
    app.config["MICROBATCH_MAX_BATCH_SIZE"] = 8
    Microbatch(app)
    assert app.config["MICROBATCH_MAX_BATCH_SIZE"] == 8
    assert app.config["MICROBATCH_MAX_WAIT_MS"] is None
    assert app.config["MICROBATCH_MAX_QUEUE_SIZE"] == 10_000
    assert app.config["MICROBATCH_SMALL_REQUEST_SIZE"] == 4
    assert app.config["MICROBATCH_TIMEOUT"] is None


def test_batcher_takes_the_app_config_and_decorator_arguments_override_it() -> None:
    app = Flask("settings")
    app.config.update(MICROBATCH_MAX_BATCH_SIZE=8, MICROBATCH_MAX_WAIT_MS=2, MICROBATCH_MAX_QUEUE_SIZE=64,
                      MICROBATCH_SMALL_REQUEST_SIZE=2)
    mb = Microbatch(app)

    @mb.batch()
    def plain(items: list[int]) -> list[int]:
        return items

    @mb.batch(max_batch_size=4, max_wait_ms=None, small_request_size=1, name="custom")
    def tuned(items: list[int]) -> list[int]:
        return items

    with app.app_context():
        b, t = plain.batcher, tuned.batcher
        assert isinstance(b, Batcher) and isinstance(t, Batcher)  # in-process: no MICROBATCH_REMOTE
        assert (b.max_batch_size, b.max_wait_ms, b.max_queue_size, b.small_request_size) == (8, 2, 64, 2)
        assert b.name == "settings.plain"
        assert (t.max_batch_size, t.max_wait_ms, t.max_queue_size, t.small_request_size) == (4, None, 64, 1)
        assert t.name == "custom"
        assert plain.batcher is b  # built once, then reused
    mb.close(app)


def test_app_factory_apps_get_their_own_batchers_and_config(make_app: MakeApp, served_app: Any) -> None:
    small, large = make_app("small", MICROBATCH_MAX_BATCH_SIZE=2), make_app("large", MICROBATCH_MAX_BATCH_SIZE=16)
    embed = served_app.embed
    with small.app_context():
        small_batcher = embed.batcher
    with large.app_context():
        large_batcher = embed.batcher
    assert small_batcher is not large_batcher
    assert (small_batcher.max_batch_size, large_batcher.max_batch_size) == (2, 16)
    small.config["GATE"].open()
    large.config["GATE"].open()
    assert post(small, "/embed", "s").json == {"vector": "vec:s"}
    assert post(large, "/embed", "l").json == {"vector": "vec:l"}
    assert (small.config["GATE"].sizes, large.config["GATE"].sizes) == ([1], [1])  # each app's own model


def test_first_use_from_many_threads_builds_one_batcher(make_app: MakeApp, served_app: Any) -> None:
    app = make_app()
    barrier = threading.Barrier(8)
    seen: list[Batcher[Any, Any]] = []

    def look() -> None:
        with app.app_context():
            barrier.wait()
            seen.append(served_app.embed.batcher)

    threads = [threading.Thread(target=look) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that they race for the first build
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(seen) == 8 and len({id(b) for b in seen}) == 1


def test_call_outside_an_app_context_names_the_fix(served_app: Any) -> None:
    with pytest.raises(RuntimeError, match=r"embed\(\) needs a Flask application context.*app_context.*init_app"):
        served_app.embed("x")
    with pytest.raises(RuntimeError, match="application context"):
        _ = served_app.embed.stats  # reading the attribute is what raises


def test_call_in_an_app_without_init_app_names_the_fix(served_app: Any) -> None:
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match=r"'bare'.*forget to call init_app"):
        served_app.embed("x")
    other = Flask("other")
    Microbatch(other)  # registered, but by another instance than the one that decorated embed
    with other.app_context(), pytest.raises(RuntimeError, match=r"'other'.*forget to call init_app"):
        served_app.embed("x")


def test_config_changed_after_init_app_is_checked_when_the_batcher_is_built() -> None:
    # init_app checks the config it sees (tests/flask_microbatch/test_options.py); a later change is
    # caught when the app's batcher for a function is built, naming the function and the app.
    app = Flask("bad")
    mb = Microbatch(app)
    app.config["MICROBATCH_MAX_BATCH_SIZE"] = "32"

    @mb.batch()
    def f(items: list[int]) -> list[int]:
        return items

    with app.app_context():
        with pytest.raises(ValueError, match=r"f\(\) on the Flask app 'bad': max_batch_size.*MICROBATCH_"):
            f(1)


def test_config_timeout_is_the_default_and_a_per_call_timeout_overrides_it(make_app: MakeApp, served_app: Any,
                                                                           in_thread: Any, until: Any) -> None:
    app = make_app(MICROBATCH_TIMEOUT=0.05)
    embed = served_app.embed
    with app.app_context():
        blocker = in_thread(embed, "held", timeout=30)  # per-call timeout: outlives the 0.05 s default
        until(lambda: embed.stats.running == 1, "the first call is running")
        with pytest.raises(DeadlineExceeded):
            embed("queued")  # no timeout given: MICROBATCH_TIMEOUT applies
        app.config["GATE"].open()
        assert blocker.result() == "vec:held"


def test_overload_is_503_with_retry_after_and_a_safe_message(
    make_app: MakeApp, served_app: Any, in_thread: Any, until: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MICROBATCH_MAX_BATCH_SIZE=1, MICROBATCH_MAX_QUEUE_SIZE=1)
    with app.app_context():
        running = in_thread(post, app, "/embed", "a")
        until(lambda: served_app.embed.stats.running == 1, "the first request runs")
        queued = in_thread(post, app, "/embed", "b")
        until(lambda: served_app.embed.stats.queue_depth == 1, "the second request is queued")
    with caplog.at_level(logging.INFO, logger="microbatch.web"):
        response = post(app, "/embed", "c")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json == {"error": "the server is overloaded: retry after the number of seconds in Retry-After"}
    assert "max_queue_size=1" in caplog.text, "the detail goes to the log only"
    app.config["GATE"].open()
    assert [running.result().json, queued.result().json] == [{"vector": "vec:a"}, {"vector": "vec:b"}]


@pytest.mark.parametrize("path", ["/embed", "/aembed"])
def test_request_timeout_header_is_a_deadline_504(make_app: MakeApp, path: str) -> None:
    app = make_app()
    response = post(app, path, "slow", **{"X-Request-Timeout": "0.05"})  # the gate holds it past 50 ms
    assert response.status_code == 504
    assert response.json == {"error": "the request's time limit passed before its result was ready"}
    assert response.json.keys() == {"error"}


def test_request_deadline_ends_with_its_request(make_app: MakeApp) -> None:
    app = make_app()
    app.config["GATE"].open()
    assert post(app, "/embed", "x", **{"X-Request-Timeout": "1e-9"}).status_code == 504
    # Same thread, same context: a deadline left behind would fail this one at once.
    assert post(app, "/embed", "y").json == {"vector": "vec:y"}


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf", "", "5 min"])
def test_a_malformed_request_timeout_is_a_400_only_where_a_batcher_is_called(make_app: MakeApp, value: str) -> None:
    app = make_app()
    client = app.test_client()
    assert client.get("/healthz", headers={"X-Request-Timeout": value}).json == {"status": "ok"}
    for path in ("/embed", "/aembed"):
        response = post(app, path, "x", **{"X-Request-Timeout": value})
        assert response.status_code == 400
        assert response.json == {
            "error": f"X-Request-Timeout must be a time > 0 in seconds, like 2.5, 5s or 5000ms, got {value!r}: "
            "fix or drop the header"
        }
    assert app.config["GATE"].sizes == []  # nothing reached the model


@pytest.mark.parametrize("value", ["5s", "5000ms", "5"])
def test_a_request_timeout_in_seconds_or_milliseconds_is_accepted(make_app: MakeApp, value: str) -> None:
    app = make_app()
    app.config["GATE"].open()
    assert post(app, "/embed", "x", **{"X-Request-Timeout": value}).json == {"vector": "vec:x"}


def test_the_timeout_header_is_configurable_or_off(make_app: MakeApp) -> None:
    renamed = make_app("renamed", MICROBATCH_TIMEOUT_HEADER="X-Deadline")
    assert post(renamed, "/embed", "late", **{"X-Deadline": "1ms"}).status_code == 504  # the gate is shut
    off = make_app("off", MICROBATCH_TIMEOUT_HEADER=None)
    for app in (renamed, off):
        app.config["GATE"].open()
        assert post(app, "/embed", "x", **{"X-Request-Timeout": "soon"}).json == {"vector": "vec:x"}


def test_closed_batcher_is_503_and_close_drains_queued_calls(make_app: MakeApp, served_app: Any,
                                                            in_thread: Any, until: Any) -> None:
    app = make_app()
    with app.app_context():
        calls = [in_thread(post, app, "/embed", f"t{i}") for i in range(3)]
        until(lambda: served_app.embed.stats.submitted == 3, "three requests are accepted")
    closing = in_thread(served_app.mb.close, app)
    until(lambda: app.extensions["microbatch"].closed, "close has begun")
    app.config["GATE"].open()
    closing.result()
    assert sorted(c.result().json["vector"] for c in calls) == ["vec:t0", "vec:t1", "vec:t2"]
    late = post(app, "/embed", "late")
    assert late.status_code == 503 and "shutting down" in late.json["error"]


def test_functions_first_used_after_close_are_refused() -> None:
    app = Flask("closed")
    mb = Microbatch(app)

    @mb.batch()
    def never(items: list[int]) -> list[int]:
        return items

    mb.close(app)
    with app.app_context(), pytest.raises(BatcherClosed, match="closed on the Flask app 'closed'"):
        never(1)


def test_other_exceptions_are_left_to_flask() -> None:
    app = Flask("failing")
    mb = Microbatch(app)

    @mb.batch()
    def broken(items: list[str]) -> list[str]:
        raise KeyError("model exploded")

    @app.post("/")
    def view() -> Any:
        return jsonify(vector=broken(request.json["text"]))

    response = post(app, "/", "x")
    assert response.status_code == 500
    assert response.json is None  # Flask's own error page, not the extension's JSON
    mb.close(app)


def test_async_batch_function_gets_its_app_context() -> None:
    app = Flask("async_fn")
    app.config["SUFFIX"] = "!"
    mb = Microbatch(app)

    @mb.batch()
    async def shout(items: list[str]) -> list[str]:
        return [item + current_app.config["SUFFIX"] for item in items]

    with app.app_context():
        assert shout("hi") == "hi!"
        assert isinstance(shout, BatchedFunction)
    mb.close(app)


def test_overloaded_handler_rounds_retry_after_up_to_whole_seconds() -> None:
    app = Flask("retry")
    Microbatch(app)

    @app.get("/<float:seconds>")
    def view(seconds: float) -> Any:
        raise Overloaded("busy", retry_after=seconds)

    client = app.test_client()
    assert [client.get(f"/{s}").headers["Retry-After"] for s in (0.01, 1.0, 1.2, 7.9)] == ["1", "1", "2", "8"]


def test_an_error_handler_answers_batcher_errors_fastapi_style() -> None:
    mb = Microbatch()
    seen: list[str] = []

    @mb.error_handler
    def detail(exc: Exception, response: ErrorResponse) -> Any:
        seen.append(response.detail)
        return {"detail": response.error}, response.status, response.headers

    @mb.batch()
    def echo(items: list[str]) -> list[str]:
        return items

    app = Flask("detail")
    mb.init_app(app)
    app.add_url_rule("/echo", "echo", lambda: jsonify(echo("x")))
    mb.close(app)
    response = app.test_client().get("/echo")
    assert (response.status_code, response.json) == (503, {"detail": error_response(BatcherClosed()).error})  # type: ignore[union-attr]
    assert seen == ["Microbatch was closed on the Flask app 'detail'; it accepts no calls"]


def test_apps_from_a_factory_are_collected_with_their_batchers_and_workers(served_app: Any) -> None:
    apps = [served_app.create_app(f"throwaway-{i}") for i in range(20)]
    for app in apps:
        app.config["GATE"].open()
        assert post(app, "/embed", "x").json == {"vector": "vec:x"}  # each app now has a batcher and a worker
    workers = [t for t in threading.enumerate() if t.name.startswith("microbatch-throwaway-")]
    assert len(workers) == 20
    refs = [weakref.ref(app) for app in apps]
    del apps, app
    gc.collect()
    assert [r for r in refs if r() is not None] == [], "every app was collected"
    for worker in workers:
        worker.join(WAIT)
    assert not any(w.is_alive() for w in workers), "each collected app's worker ended"
