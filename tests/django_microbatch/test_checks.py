"""settings.MICROBATCH is checked when Django starts: the ``django_microbatch`` app registers a system
check (run by ``manage.py check``, ``runserver``, ``migrate``) that reports every bad entry with the key
to fix, and an entry takes every engine option, tensor batching included."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import django_microbatch
from django_microbatch._registry import KEYS
from microbatch import Batcher
from microbatch._options import OPTIONS

EMBED = {"fn": "djmb_app.embed_texts", "max_batch_size": 8, "max_wait_ms": 0}
INSTALLED = ["django_microbatch"]


def check(**microbatch: Any) -> str:
    """Run ``manage.py check`` with the app installed and ``MICROBATCH`` set; its report, or the error's."""
    out = io.StringIO()
    with override_settings(INSTALLED_APPS=INSTALLED, MICROBATCH=microbatch):
        try:
            call_command("check", stdout=out, stderr=out)
        except SystemCheckError as exc:
            return str(exc)
    return out.getvalue()


def test_every_engine_option_is_an_entry_key() -> None:
    # The entry's key in MICROBATCH is the batcher's name; "remote" points the name at model hosts.
    assert set(KEYS) == {"fn", "remote", *OPTIONS} - {"name"}


def test_a_good_configuration_passes_the_check() -> None:
    assert "System check identified no issues" in check(embed=EMBED)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"max_batch_size": 8}, "settings.MICROBATCH['bad'] has no 'fn': set it to the dotted path"),
        ({"fn": "djmb_app.no_such_fn"}, "settings.MICROBATCH['bad']['fn'] = 'djmb_app.no_such_fn' cannot be imported"),
        ({"fn": "djmb_app.WAIT"}, "settings.MICROBATCH['bad']: Batcher needs a callable batch function, got float"),
        ({**EMBED, "max_batch": 4}, "settings.MICROBATCH['bad'] has unknown option(s) 'max_batch'; valid: 'fn'"),
        ({**EMBED, "max_batch_size": 0}, "settings.MICROBATCH['bad']: max_batch_size must be an integer >= 1, got 0"),
        ({**EMBED, "max_queue_size": 4}, "settings.MICROBATCH['bad']: max_queue_size (4) must be at least"),
        ({**EMBED, "max_batch_tokens": 0}, "settings.MICROBATCH['bad']: max_batch_tokens must be None or an integer"),
        ({**EMBED, "group_by_length": "no"}, "settings.MICROBATCH['bad']: group_by_length must be True or False"),
        ({**EMBED, "collate": "djmb_collate.NOPE"},
         "settings.MICROBATCH['bad']['collate'] = 'djmb_collate.NOPE' cannot be imported"),
        ({**EMBED, "collate": "djmb_app.WAIT"}, "settings.MICROBATCH['bad']: collate must have size(item)"),
    ],
)
def test_a_bad_entry_fails_the_check_naming_the_key_to_fix(entry: dict[str, Any], message: str) -> None:
    report = check(embed=EMBED, bad=entry)
    assert "django_microbatch.E002" in report
    assert message in report
    assert "'embed'" not in report  # only the bad entry is reported


def test_every_bad_entry_is_reported_at_once() -> None:
    report = check(one={"fn": "djmb_app.embed_texts", "timeout": -1}, two="djmb_app.embed_texts")
    assert "settings.MICROBATCH['one']: timeout must be None" in report
    assert "settings.MICROBATCH['two'] must be a dict with at least 'fn', got str" in report


def test_a_microbatch_setting_that_is_not_a_dict_fails_the_check() -> None:
    with override_settings(INSTALLED_APPS=INSTALLED, MICROBATCH=[("embed", EMBED)]):
        errors = run_checks(tags=["microbatch"])
    assert [e.id for e in errors] == ["django_microbatch.E001"]
    assert "settings.MICROBATCH must be a dict of batcher name -> options" in errors[0].msg


def test_tensor_batching_options_and_a_dotted_collate_reach_the_batcher() -> None:
    entry = {"fn": "djmb_collate.shout", "collate": "djmb_collate.CHARS", "max_batch_tokens": 8,
             "group_by_length": False, "max_wait_ms": 0}
    with override_settings(MICROBATCH={"shout": entry}):
        batcher = django_microbatch.get_batcher("shout")
        assert isinstance(batcher, Batcher)  # no "remote": in-process
        assert (batcher.max_batch_tokens, batcher.group_by_length) == (8, False)
        assert type(batcher.collate).__name__ == "CharCollate"
        assert batcher("abc") == "ABC"
