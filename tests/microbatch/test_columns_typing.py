"""A user's column batch functions type-check under ``mypy --strict``: ``@batch_columns`` types each call
by the element types of the function's lists, awaited and mapped calls too, and tuple outputs per caller."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_FILE = '''
from __future__ import annotations

import operator

from microbatch import ColumnBatcher, batch_columns


@batch_columns(max_batch_size=16, group_by=operator.itemgetter("lengths"), size_of=lambda call: len(call["words"]))
def trim(words: list[str], lengths: list[int]) -> list[str]:
    return [w[:n] for w, n in zip(words, lengths)]


@batch_columns()
async def measure(xs: list[float], ys: list[float]) -> tuple[list[float], list[str]]:
    return [x + y for x, y in zip(xs, ys)], [f"{x}" for x in xs]


typed: ColumnBatcher[str, int, str] = trim
by_position: str = trim("hello", 3)
by_name: str = trim(words="hello", lengths=3, timeout=1.0)
mapped: list[str] = trim.map([("hello", 3), ("world", 2)])
pair: tuple[float, str] = measure(1.0, 2.0)


async def handler() -> list[tuple[float, str]]:
    one: str = await trim.acall("hello", 3)
    return [await measure.acall(1.0, 2.0), *(await measure.amap([(3.0, 4.0)]))] + [(0.0, one)]


wrong_result: int = trim("hello", 3)
wrong_order = trim(3, "hello")
wrong_row = trim.map([("hello", "3")])
wrong_output: float = measure(1.0, 2.0)
'''


def test_column_batchers_pass_mypy_strict_and_wrong_calls_are_reported(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(textwrap.dedent(USER_FILE))
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), "service.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    errors = [line.split(": error: ")[0] + " " + line.rsplit("[", 1)[-1] for line in run.stdout.splitlines()
              if ": error: " in line]
    assert errors == [
        "service.py:31 assignment]",
        "service.py:32 call-overload]",
        "service.py:33 list-item]",
        "service.py:34 assignment]",
    ], run.stdout + run.stderr
