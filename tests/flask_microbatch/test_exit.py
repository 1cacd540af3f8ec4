"""Batchers drain at process exit: a real interpreter exits with calls still queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flask_microbatch

# The script's own atexit handlers bracket the extension's: ``report`` is registered before
# flask_microbatch is imported, so it runs after the extension's handler; ``gate.set`` after, so it
# runs before it. The batch function holds the first batch until then, with three calls queued.
SCRIPT = """
import atexit, json, threading, time

def report():
    with app.app_context():
        s = embed.stats
        print(json.dumps({"closed": embed.batcher.closed, "completed": s.completed, "sizes": sizes}))

atexit.register(report)

from flask import Flask
from flask_microbatch import Microbatch

app = Flask("exiting")
mb = Microbatch(app)
gate = threading.Event()
sizes = []

@mb.batch(max_wait_ms=0)
def embed(texts):
    sizes.append(len(texts))
    gate.wait()
    return [t.upper() for t in texts]

def call(text):
    with app.app_context():
        embed(text)

def wait_until(predicate):
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.0005)

with app.app_context():
    threading.Thread(target=call, args=("a",), daemon=True).start()
    wait_until(lambda: embed.stats.running == 1)
    for text in "bcd":
        threading.Thread(target=call, args=(text,), daemon=True).start()
    wait_until(lambda: embed.stats.queue_depth == 3)
atexit.register(gate.set)
"""


def test_queued_calls_drain_at_process_exit() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(flask_microbatch.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"closed": True, "completed": 4, "sizes": [1, 3]}
