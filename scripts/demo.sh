#!/usr/bin/env bash
# The README's main command: installs what is needed (.venv, via scripts/env.sh), then serves the
# embedding service (Starlette + uvicorn, one worker, the packaged all-MiniLM-L6-v2 model) batched
# and unbatched, load-tests both with Locust (about five minutes on a 2-core machine), and prints the
# table and the path of the plot. Extra arguments go to load/compare.py (e.g. --framework flask).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python load/compare.py --framework starlette --duration 5 "$@"
