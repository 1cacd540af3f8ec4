#!/usr/bin/env bash
# The test command: installs what it needs into .venv, then runs the gates: ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m ruff check src adapters examples load tests
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
