"""settings.MICROBATCH: lazy reading, one shared batcher per entry, override_settings, misconfiguration errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import djmb_app
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import django_microbatch
from microbatch import Batcher, DeadlineExceeded, SupportsBatching

WAIT = 10.0
EMBED = {"fn": "djmb_app.embed_texts", "max_batch_size": 8, "max_wait_ms": 0}


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(django_microbatch) if not name.startswith("_")} - {"annotations"}
    assert set(django_microbatch.__all__) == public
    assert all(hasattr(django_microbatch, name) for name in django_microbatch.__all__)


def test_one_batcher_per_name_shared_by_every_thread(pool: ThreadPoolExecutor) -> None:
    start = threading.Barrier(8)

    def first_lookup() -> SupportsBatching[Any, Any]:
        start.wait(WAIT)
        return django_microbatch.get_batcher("embed")

    found = [f.result(WAIT) for f in [pool.submit(first_lookup) for _ in range(8)]]
    assert all(b is found[0] for b in found)
    assert isinstance(found[0], Batcher)  # no "remote": in-process
    assert (found[0].name, found[0].max_batch_size, found[0].max_wait_ms) == ("embed", 8, 0)


def test_options_reach_the_batcher() -> None:
    options = {"max_batch_size": 4, "max_wait_ms": 2.5, "small_request_size": 2, "max_queue_size": 9,
               "on_error": "fail_batch", "aging_ms": 7}
    with override_settings(MICROBATCH={"custom": {"fn": "djmb_app.embed_texts", **options}}):
        batcher = django_microbatch.get_batcher("custom")
        assert {key: getattr(batcher, key) for key in options} == options


def test_on_worker_start_is_a_dotted_path_run_on_the_worker_thread() -> None:
    hooked = {"fn": "djmb_app.embed_texts", "on_worker_start": "djmb_app.note_worker"}
    with override_settings(MICROBATCH={"hooked": hooked}):
        assert django_microbatch.get_batcher("hooked")("text") == "vec(text)"
        assert djmb_app.worker_starts == ["microbatch-hooked"]


def test_coalesce_may_be_a_dotted_path_to_a_key_function(
    model: Any, pool: ThreadPoolExecutor, wait_until: Callable[[Callable[[], bool], str], None]
) -> None:
    folded = {"fn": "djmb_app.embed_texts", "coalesce": "djmb_app.casefolded"}
    with override_settings(MICROBATCH={"folded": folded}):
        batcher = django_microbatch.get_batcher("folded")
        assert isinstance(batcher, Batcher) and batcher.coalesce is djmb_app.casefolded
        model.hold()
        first = pool.submit(batcher, "Hello")
        model.wait_blocked()
        second = pool.submit(batcher, "HELLO")  # the same key as the running "Hello": it joins it
        wait_until(lambda: batcher.stats.coalesced == 1, "HELLO joined Hello")
        model.release()
        assert first.result(WAIT) == second.result(WAIT) == "vec(Hello)"
        assert model.sizes == [1]


@pytest.mark.parametrize("coalesce", [True, False])
def test_coalesce_true_and_false_stay_booleans(coalesce: bool) -> None:
    with override_settings(MICROBATCH={"flag": {"fn": "djmb_app.embed_texts", "coalesce": coalesce}}):
        batcher = django_microbatch.get_batcher("flag")
        assert isinstance(batcher, Batcher) and batcher.coalesce is coalesce


def test_fn_may_be_the_function_itself() -> None:
    import djmb_app

    with override_settings(MICROBATCH={"direct": {"fn": djmb_app.embed_texts}}):
        assert django_microbatch.get_batcher("direct")("x") == "vec(x)"


def test_override_settings_adds_a_batcher_and_removing_it_closes_it(post: Callable[..., Any]) -> None:
    embed = django_microbatch.get_batcher("embed")
    with override_settings(MICROBATCH={"embed": EMBED, "extra": {"fn": "djmb_app.embed_texts"}}):
        assert post("/sync/extra/", "x").json() == {"vector": "vec(x)"}
        extra = django_microbatch.get_batcher("extra")
        assert extra is not embed and extra.stats.completed == 1
        assert django_microbatch.get_batcher("embed") is embed  # an unchanged entry keeps its batcher
    assert extra.closed and not embed.closed
    with pytest.raises(ImproperlyConfigured, match="'extra', which settings.MICROBATCH does not configure"):
        django_microbatch.get_batcher("extra")


def test_a_changed_entry_gets_a_new_batcher() -> None:
    old = django_microbatch.get_batcher("embed")
    with override_settings(MICROBATCH={"embed": {**EMBED, "max_batch_size": 2}}):
        new = django_microbatch.get_batcher("embed")
        assert old.closed and new is not old and new.max_batch_size == 2
    assert new.closed and django_microbatch.get_batcher("embed").max_batch_size == 8


def test_close_all_drains_and_the_next_lookup_builds_afresh(
    model: Any,
    queued: Callable[[str, int], None],
    wait_until: Callable[[Callable[[], bool], str], None],
    pool: ThreadPoolExecutor,
    post: Callable[..., Any],
) -> None:
    old = django_microbatch.get_batcher("embed")
    model.hold()
    running = pool.submit(post, "/sync/", "a")
    model.wait_blocked()
    waiting = pool.submit(post, "/sync/", "b")
    queued("embed", 1)
    closing = pool.submit(django_microbatch.close_all)
    wait_until(lambda: old.closed, "close_all has begun closing the batcher")
    model.release()
    closing.result(WAIT)
    # Queued before the close, so drained: it runs rather than failing with BatcherClosed.
    assert running.result(WAIT).json() == {"vector": "vec(a)"}
    assert waiting.result(WAIT).json() == {"vector": "vec(b)"}
    assert old.closed and django_microbatch.get_batcher("embed") is not old


def test_configured_timeout_is_the_default_of_every_call_form(model: Any, pool: ThreadPoolExecutor) -> None:
    with override_settings(MICROBATCH={"slow": {"fn": "djmb_app.embed_texts", "timeout": 0.05}}):
        batcher = django_microbatch.get_batcher("slow")
        model.hold()
        patient = pool.submit(batcher, "a", timeout=WAIT)  # submitted first: it would expire first on the default
        model.wait_blocked()
        for call in (lambda: batcher("b"), lambda: batcher.map(["c"]),
                     lambda: asyncio.run(batcher.acall("d")), lambda: asyncio.run(batcher.amap(["e"]))):
            with pytest.raises(DeadlineExceeded):
                call()
        model.release()
        assert patient.result(WAIT) == "vec(a)"
        assert model.sizes == [1]


def test_missing_batcher_name_names_the_attribute_and_the_hook(post: Callable[..., Any]) -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        post("/unnamed/", "x")
    assert str(error.value) == (
        "UnnamedView is missing the batcher_name attribute. Define UnnamedView.batcher_name, "
        "or override UnnamedView.get_batcher_name()."
    )


def test_unknown_batcher_name_names_the_attribute_the_hook_and_the_configured_names(post: Callable[..., Any]) -> None:
    with override_settings(MICROBATCH={"embed": EMBED, "rerank": EMBED}):
        with pytest.raises(ImproperlyConfigured) as error:
            post("/sync/nope/", "x")
    assert str(error.value) == (
        "NamedEmbedView.batcher_name (or NamedEmbedView.get_batcher_name()) is 'nope', which settings.MICROBATCH "
        "does not configure (configured names: 'embed', 'rerank'). Add 'nope' to settings.MICROBATCH or correct "
        "NamedEmbedView.batcher_name (or NamedEmbedView.get_batcher_name())."
    )


def test_unknown_name_in_get_batcher() -> None:
    with override_settings(MICROBATCH={}):
        with pytest.raises(ImproperlyConfigured, match=r"is 'embed', .* \(configured names: none\)"):
            django_microbatch.get_batcher("embed")


def test_settings_are_read_at_lookup_not_at_import() -> None:
    # The setting may even be absent until the first lookup needs it.
    with override_settings():
        del settings.MICROBATCH
        with pytest.raises(ImproperlyConfigured, match=r"configured names: none"):
            django_microbatch.get_batcher("embed")
    assert django_microbatch.get_batcher("embed").name == "embed"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "settings.MICROBATCH['bad'] has no 'fn': set it to the dotted path of the batch function"),
        ({"fn": "djmb_app.no_such_fn"}, "settings.MICROBATCH['bad']['fn'] = 'djmb_app.no_such_fn' cannot be imported: "
         'Module "djmb_app" does not define a "no_such_fn" attribute/class'),
        ({"fn": "djmb_app.embed_texts", "on_worker_start": "djmb_app.no_such_hook"},
         "settings.MICROBATCH['bad']['on_worker_start'] = 'djmb_app.no_such_hook' cannot be imported: "),
        ({"fn": "djmb_app.embed_texts", "coalesce": "djmb_app.no_such_key"},
         "settings.MICROBATCH['bad']['coalesce'] = 'djmb_app.no_such_key' cannot be imported: "),
        ({"fn": "no_such_module.embed"},
         "settings.MICROBATCH['bad']['fn'] = 'no_such_module.embed' cannot be imported: "
         "No module named 'no_such_module'"),
        ({"fn": "djmb_app.embed_texts", "max_batch": 4},
         "settings.MICROBATCH['bad'] has unknown option(s) 'max_batch'; valid: 'fn', 'max_batch_size'"),
        ({"fn": "djmb_app.embed_texts", "max_batch_size": 0},
         "settings.MICROBATCH['bad']: max_batch_size must be an integer >= 1, got 0"),
        ({"fn": "djmb_app.embed_texts", "on_error": "ignore"}, "settings.MICROBATCH['bad']: on_error must be"),
        ({"fn": "djmb_app.embed_texts", "timeout": -1},
         "settings.MICROBATCH['bad']: timeout must be None or a number of seconds > 0, got -1"),
        ({"fn": "djmb_app.WAIT"}, "settings.MICROBATCH['bad']: Batcher needs a callable batch function, got float"),
        ("djmb_app.embed_texts", "settings.MICROBATCH['bad'] must be a dict with at least 'fn', got str"),
    ],
)
def test_bad_entry_says_which_key_is_wrong(entry: object, message: str) -> None:
    with override_settings(MICROBATCH={"bad": entry}):
        with pytest.raises(ImproperlyConfigured) as error:
            django_microbatch.get_batcher("bad")
        assert str(error.value).startswith(message)


def test_microbatch_setting_must_be_a_dict() -> None:
    with override_settings(MICROBATCH=[("embed", EMBED)]):
        with pytest.raises(ImproperlyConfigured, match="settings.MICROBATCH must be a dict of batcher name -> options"):
            django_microbatch.get_batcher("embed")
