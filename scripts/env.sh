#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv with everything the tests,
# examples and load runs need. Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# microbatch.remote's tests and scale-out demo start their own redis-server (Debian's package).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # Debian's package may start a system-wide server; the project starts its own on free ports.
  else
    echo "scripts/env.sh: redis-server is missing; install it (Debian/Ubuntu: sudo apt-get install redis-server," >&2
    echo "macOS: brew install redis) and run this again" >&2
    exit 1
  fi
fi
stamp=.venv/.microbatch-installed
want=$(cat pyproject.toml scripts/env.sh | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # The pinned CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[asgi,flask,django,remote,examples,load,dev]"
  echo "$want" > "$stamp"
fi
