"""README.md against the code, so the docs cannot drift silently: the options table lists exactly the
option schema with its defaults, every ``MICROBATCH_*`` key it names exists (and the Flask section
names every config key), every exception it names is real and every public one is documented, and the
tables of HTTP statuses and dispatch reasons are the code's own."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

import asgi_microbatch
import django_microbatch
import flask_microbatch
import microbatch
import microbatch.remote
from examples import _api
from flask_microbatch import _remote as flask_remote
from microbatch import _cli, prometheus, tensors, web
from microbatch._options import OPTIONS
from microbatch._policy import DISPATCH_REASONS
from microbatch.web import HTTP_ERRORS, TIMEOUT_HEADER, error_response

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")

# Everything the README may call MICROBATCH_*: Flask config keys, Django settings, environment variables.
FLASK_KEYS = {option.config_key for option in OPTIONS.values() if option.app_wide} | {
    "MICROBATCH_TIMEOUT_HEADER", flask_remote.REMOTE_KEY,
}
DJANGO_SETTINGS = {"MICROBATCH", "MICROBATCH_TIMEOUT_HEADER", "MICROBATCH_ERROR_HANDLER"}
ENVIRONMENT = {_cli.URL_ENV, _api.MODE_ENV, _api.REMOTE_ENV}

# Other projects' names the README mentions.
THIRD_PARTY = {
    "ModelOutput",  # Hugging Face transformers
    "ImproperlyConfigured", "Client", "AsyncClient",  # Django
    "ClientDisconnect",  # Starlette
    "InteractiveUser", "BulkUser", "ConstantRateUser",  # load/locustfile.py's Locust users
}

PUBLIC_ERRORS = {
    name: value
    for module in (microbatch, microbatch.remote)
    for name in module.__all__
    if isinstance(value := getattr(module, name), type) and issubclass(value, BaseException)
}


def section(heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n", TEXT, re.MULTILINE)
    assert match is not None, f"README.md has no heading {heading!r}"
    level = len(match[1])
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(TEXT, match.end())
    return TEXT[match.end() : end.start() if end else len(TEXT)]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with ``header``, without the header."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"no table starting {header!r}"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def code(cell: str) -> str:
    """The text of a cell that is one inline code span, e.g. ``max_batch_size``."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match is not None, f"expected one `code` span, got {cell!r}"
    return match[1]


def expected_row(name: str) -> str:
    """The row the options table needs for ``name`` (its meaning from the schema's doc line)."""
    option = OPTIONS[name]
    return f"| `{name}` | `{option.default!r}` | {option.doc} |"


def test_options_table_lists_every_option_in_schema_order_with_its_default() -> None:
    rows = table_rows(section("Options"), "| option | default |")
    documented = [code(row[0]) for row in rows]
    missing = [expected_row(name) for name in OPTIONS if name not in documented]
    assert not missing, "README.md's options table lacks rows; add (and edit the wording):\n" + "\n".join(missing)
    assert documented == list(OPTIONS), "the table must list exactly the schema's options, in its order"
    for row in rows:
        name, default = code(row[0]), ast.literal_eval(code(row[1]))
        assert default == OPTIONS[name].default and type(default) is type(OPTIONS[name].default), (
            f"README.md gives {name} the default {row[1]}; the schema's is {OPTIONS[name].default!r}"
        )


def test_every_microbatch_key_named_exists() -> None:
    named = set(re.findall(r"\bMICROBATCH_[A-Z_]+\b", TEXT)) - {"MICROBATCH_"}
    known = FLASK_KEYS | DJANGO_SETTINGS | ENVIRONMENT
    assert named - known == set(), "README.md names keys that nothing reads"


def test_flask_section_names_every_config_key_and_only_those() -> None:
    named = set(re.findall(r"\bMICROBATCH_[A-Z_]+\b", section("Flask: `flask_microbatch`"))) - {"MICROBATCH_"}
    assert named == FLASK_KEYS


def test_the_options_flask_has_no_key_for_are_named_as_such() -> None:
    flask = section("Flask: `flask_microbatch`")
    listed = re.search(r"The\s+options\s+that\s+belong\s+to\s+one\s+function\s+\(([^)]*)\)", flask)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed[1])) == {name for name, option in OPTIONS.items() if not option.app_wide}


def test_exceptions_table_lists_every_public_engine_exception() -> None:
    rows = table_rows(section("Exceptions"), "| exception | raised when |")
    engine_errors = {name for name in microbatch.__all__ if name in PUBLIC_ERRORS} - {"MicrobatchError"}
    assert {code(row[0]) for row in rows} == engine_errors
    assert "`MicrobatchError`" in section("Exceptions")


def test_every_class_or_exception_named_exists() -> None:
    named = set(re.findall(r"`([A-Z][a-z][A-Za-z0-9]*)`", TEXT))
    ours = {
        name
        for module in (microbatch, microbatch.remote, tensors, web, prometheus)
        + (asgi_microbatch, flask_microbatch, django_microbatch)
        for name in module.__all__
    }
    python = {name for name in dir(builtins) if isinstance(getattr(builtins, name), type)} | {"None", "True", "False"}
    assert named - ours - python - THIRD_PARTY == set(), "README.md names classes or exceptions that do not exist"
    assert set(PUBLIC_ERRORS) <= named, "every public exception is documented"


@pytest.mark.parametrize("error", HTTP_ERRORS, ids=lambda error: error.__name__)
def test_http_table_gives_each_error_the_status_the_adapters_answer(error: type[Exception]) -> None:
    rows = {code(row[0]): row for row in table_rows(section("Web frameworks"), "| exception")}
    exc = error("x", retry_after=2.5) if issubclass(error, microbatch.Overloaded) else error("x")
    response = error_response(exc)
    assert response is not None
    status, header = rows[error.__name__][1], rows[error.__name__][2]
    assert int(status) == response.status
    assert ("Retry-After" in header) == ("Retry-After" in response.headers)


def test_http_table_lists_only_mapped_errors() -> None:
    rows = table_rows(section("Web frameworks"), "| exception")
    assert {code(row[0]) for row in rows} == {error.__name__ for error in HTTP_ERRORS}
    assert f"`{TIMEOUT_HEADER}`" in section("Web frameworks")


def test_dispatch_reasons_table_is_the_engines() -> None:
    rows = table_rows(section("When a batch is dispatched"), "| reason |")
    assert [code(row[0]) for row in rows] == list(DISPATCH_REASONS)


def test_layout_names_every_engine_module() -> None:
    layout = section("Layout")
    package = Path(microbatch.__file__).parent
    modules = {path.stem for path in package.glob("*.py")} - {"__init__"}
    missing = sorted(name for name in modules if f"`{name}`" not in layout)
    assert not missing, f"README.md's Layout does not name {missing}"
