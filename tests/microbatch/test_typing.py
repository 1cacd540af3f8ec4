"""``@batch`` is typed like ``Batcher(fn)`` (mypy --strict infers ``Batcher[str, int]`` from the
function, and from a method once its instance binds it) and wraps ``fn`` like ``functools.wraps``."""

from __future__ import annotations

import functools
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

from microbatch import Batcher, batch


def test_a_decorated_function_keeps_its_name_doc_module_and_wrapped() -> None:
    def embed(texts: list[str]) -> list[int]:
        """Embed each text."""
        return [len(t) for t in texts]

    decorated = batch(max_batch_size=8)(embed)

    assert isinstance(decorated, Batcher)
    for attribute in functools.WRAPPER_ASSIGNMENTS:
        if hasattr(embed, attribute):
            assert getattr(decorated, attribute) == getattr(embed, attribute), attribute
    assert vars(decorated)["__wrapped__"] is embed
    assert inspect.unwrap(decorated) is embed
    assert decorated.name == embed.__qualname__
    with decorated:
        assert decorated("abc") == 3


def test_decorated_functions_and_methods_are_typed_under_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from microbatch import Batcher, batch


            @batch(max_batch_size=8)
            def lengths(xs: list[str]) -> list[int]:
                return [len(x) for x in xs]


            @batch()
            async def doubled(xs: list[int]) -> list[int]:
                return [2 * x for x in xs]


            class Model:
                @batch(max_wait_ms=0)
                def predict(self, xs: list[float]) -> list[str]:
                    return [str(x) for x in xs]


            typed: Batcher[str, int] = lengths
            n: int = lengths("text")
            ns: list[int] = lengths.map(["a", "b"], timeout=1.0)
            mixed: list[int | Exception] = lengths.map(["a"], return_exceptions=True)
            awaited: Batcher[int, int] = doubled
            label: str = Model().predict(1.5)
            wrong: str = lengths("text")  # error 1: an int is not a str
            lengths(3)  # error 2: the items are str
            lengths("a", 1.0)  # error 3: timeout is keyword-only
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), "service.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    errors = [line.split(": error:")[0] for line in run.stdout.splitlines() if ": error:" in line]
    assert errors == ["service.py:29", "service.py:30", "service.py:31"], run.stdout + run.stderr
