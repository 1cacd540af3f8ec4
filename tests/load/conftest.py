"""The load scripts import each other by plain name (they run with ``load/`` first on the path): so do their tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load"))
