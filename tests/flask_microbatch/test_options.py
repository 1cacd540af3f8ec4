"""The extension takes every engine option, from the app config or the decorator, and checks them at startup:
``init_app`` refuses a bad ``MICROBATCH_*`` value and ``@mb.batch(...)`` a bad argument, each error naming
the key or the function and the fix, before any request is served."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from flask import Flask, jsonify, request

from flask_microbatch import BatchOptions, Microbatch
from flask_microbatch._batched import CONFIG
from microbatch import Batcher, BatcherOptions
from microbatch._options import OPTIONS


class CharCollate:
    """A collate for strings: an item's size is its length; the batch input is the list itself."""

    def size(self, item: str) -> int:
        return len(item)

    def collate(self, items: list[str]) -> list[str]:
        return list(items)

    def split(self, output: list[str], items: list[str]) -> Sequence[str]:
        return output


def test_config_keys_and_decorator_arguments_derive_from_the_engine_schema() -> None:
    app_wide = {name for name, option in OPTIONS.items() if option.app_wide}
    assert CONFIG == {f"MICROBATCH_{name.upper()}": (name, OPTIONS[name].default) for name in app_wide}
    assert {"MICROBATCH_MAX_BATCH_TOKENS", "MICROBATCH_GROUP_BY_LENGTH"} <= set(CONFIG)
    assert BatchOptions.__optional_keys__ == BatcherOptions.__optional_keys__ == frozenset(OPTIONS)


def test_every_config_key_gets_the_engine_default() -> None:
    app = Flask("defaults")
    Microbatch(app)
    assert {key: app.config[key] for key in CONFIG} == {key: default for key, (_, default) in CONFIG.items()}


def test_tensor_batching_options_reach_the_batcher_from_config_and_decorator() -> None:
    app = Flask("tokens")
    app.config.update(MICROBATCH_MAX_BATCH_TOKENS=12, MICROBATCH_GROUP_BY_LENGTH=False)
    mb = Microbatch(app)

    options: BatchOptions = {"collate": CharCollate(), "max_batch_tokens": 8, "max_wait_ms": 0}

    @mb.batch(**options)
    def shout(texts: list[str]) -> list[str]:
        return [text.upper() for text in texts]

    @mb.batch()
    def echo(texts: list[str]) -> list[str]:
        return texts

    @app.post("/shout")
    def shout_view() -> Any:
        return jsonify(text=shout(request.get_json()["text"]))

    with app.app_context():
        shouting, echoing = shout.batcher, echo.batcher
        assert isinstance(shouting, Batcher) and isinstance(echoing, Batcher)  # in-process: no MICROBATCH_REMOTE
        assert (shouting.max_batch_tokens, shouting.group_by_length) == (8, False)
        assert isinstance(shouting.collate, CharCollate)
        assert (echoing.max_batch_tokens, echoing.collate) == (12, None)
    client = app.test_client()
    assert client.post("/shout", json={"text": "abc"}).get_json() == {"text": "ABC"}
    too_long = client.post("/shout", json={"text": "nine char"})
    assert too_long.status_code == 413
    # 413 shows the decorator's 8 won over 12; its detail stays in the log
    assert "max_batch_tokens" not in too_long.get_json()["error"]
    mb.close(app)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"MICROBATCH_MAX_BATCH_SIZE": 0}, r"MICROBATCH_MAX_BATCH_SIZE = 0: max_batch_size must be an integer >= 1"),
        ({"MICROBATCH_MAX_BATCH_SIZE": "32"}, r"MICROBATCH_MAX_BATCH_SIZE = '32'"),
        ({"MICROBATCH_MAX_BATCH_TOKENS": 0}, r"MICROBATCH_MAX_BATCH_TOKENS = 0: max_batch_tokens must be None or"),
        ({"MICROBATCH_GROUP_BY_LENGTH": "no"}, r"MICROBATCH_GROUP_BY_LENGTH = 'no': group_by_length must be True"),
        ({"MICROBATCH_ON_ERROR": "ignore"}, r"MICROBATCH_ON_ERROR = 'ignore': on_error must be 'isolate'"),
        ({"MICROBATCH_TIMEOUT": -1}, r"MICROBATCH_TIMEOUT = -1: timeout must be None or a number of seconds > 0"),
    ],
)
def test_init_app_refuses_a_bad_config_value_naming_the_key_and_the_fix(config: dict[str, Any], named: str) -> None:
    app = Flask("misconfigured")
    app.config.update(config)
    key = next(iter(config))
    with pytest.raises(ValueError, match=named) as error:
        Microbatch(app)
    assert f"set app.config['{key}'] to a valid value" in str(error.value)
    assert "microbatch" not in app.extensions  # nothing was registered: fix the config and call init_app again


def test_init_app_checks_the_config_against_functions_decorated_before_it() -> None:
    mb = Microbatch()

    @mb.batch(max_batch_size=64)
    def embed(items: list[str]) -> list[str]:
        return items

    app = Flask("factory")
    app.config["MICROBATCH_MAX_QUEUE_SIZE"] = 32
    with pytest.raises(ValueError, match=r"embed\(\) on the Flask app 'factory': max_queue_size \(32\) must be "
                                         r"at least max_batch_size \(64\)"):
        mb.init_app(app)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_batch_size": 0}, r"embed\(\): max_batch_size must be an integer >= 1, got 0"),
        ({"max_batch_tokens": -5}, r"embed\(\): max_batch_tokens must be None or an integer >= 1"),
        ({"collate": "PadCollate"}, r"embed\(\): collate must have size\(item\), collate\(items\) and split"),
        ({"timeout": 0}, r"embed\(\): timeout must be None or a number of seconds > 0"),
    ],
)
def test_a_bad_decorator_argument_is_refused_where_it_is_written(options: dict[str, Any], named: str) -> None:
    mb = Microbatch(Flask("app"))
    with pytest.raises((TypeError, ValueError), match=named):

        @mb.batch(**options)
        def embed(items: list[str]) -> list[str]:
            return items
