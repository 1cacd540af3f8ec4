#!/usr/bin/env bash
# The README's main command: installs what is needed (.venv and redis-server, via scripts/env.sh), then
# serves the embedding service (Starlette + uvicorn, one worker, the packaged all-MiniLM-L6-v2 model)
# batched and unbatched, load-tests both with Locust (about five minutes on a 2-core machine), and prints
# the table and the path of the plot. Extra arguments go to load/compare.py (e.g. --framework flask).
#
#   bash scripts/demo.sh --scale-out   # instead: several web workers sharing one model host through
#                                      # Redis against a model per worker, and the kill test
#                                      # (load/scale_out.py; about 5 minutes; it starts and stops its own
#                                      # redis-server on a free port). Extra arguments go to scale_out.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "${1:-}" = "--scale-out" ]; then
  shift
  exec .venv/bin/python load/scale_out.py "$@"
fi
exec .venv/bin/python load/compare.py --framework starlette --duration 5 "$@"
