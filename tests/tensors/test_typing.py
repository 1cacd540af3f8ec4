"""A user's batcher over a tensor forward pass type-checks: with a collate, fn takes the batch input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_batcher_with_a_collate_passes_mypy_strict_and_keeps_the_plain_form_typed(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from typing import Any

            from microbatch import Batcher
            from microbatch.tensors import PadCollate


            def forward(features: dict[str, Any]) -> Any:
                return features["input_ids"]


            encoder = Batcher(forward, collate=PadCollate(pad_values={"input_ids": 0}), max_batch_tokens=1024)


            def lengths(texts: list[str]) -> list[int]:
                return [len(t) for t in texts]


            plain = Batcher(lengths, max_batch_size=8)
            n: int = plain("text")
            wrong: str = plain("text")  # the one error this file must report
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), "service.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "service.py:23:" in errors[0] and "assignment" in errors[0], run.stdout + run.stderr
