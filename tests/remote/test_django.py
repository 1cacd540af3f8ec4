"""django_microbatch: a ``settings.MICROBATCH`` entry with ``"remote"`` serves through the hosts of its name.

The Django project (``_django_site``) runs under uvicorn in a subprocess, so its settings stay its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests._support import wait_until
from tests.conftest import free_port

from .conftest import ROOT, RedisServer, host_env


@pytest.fixture
def django_site(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {**host_env(redis_server.url), "DJANGO_SETTINGS_MODULE": "tests.remote._django_site"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.remote._django_site:application", "--port", str(port),
         "--log-level", "warning"], env=env, cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/kind", timeout=1).status_code == 200
        except requests.ConnectionError:
            return server.poll() is not None

    try:
        wait_until(answers, "the Django site answers", timeout=30)
        assert server.poll() is None, "the Django site exited"
        yield url
    finally:
        server.terminate()
        server.wait(30)


def test_django_views_serve_through_a_remote_entry(
    start_host: Callable[..., Any], redis_server: RedisServer, django_site: str
) -> None:
    host = start_host("echo")
    assert requests.get(f"{django_site}/kind", timeout=10).json() == {"type": "RemoteBatcher"}
    with ThreadPoolExecutor(8) as pool:
        texts = [f"text {i}" for i in range(24)]
        paths = ["echo", "sync-echo"] * 12
        answers = list(pool.map(lambda p, t: requests.post(f"{django_site}/{p}", json={"text": t}, timeout=10),
                                paths, texts))
    assert [a.json() for a in answers] == [{"result": [t, host.pid]} for t in texts]
    redis_server.stop()
    down = requests.post(f"{django_site}/echo", json={"text": "x"}, timeout=10)
    assert down.status_code == 503 and "unreachable" in down.json()["error"]


def test_a_remote_entry_needs_a_redis_url() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_microbatch._registry import configure

    with pytest.raises(ImproperlyConfigured, match=r"\['remote'\].*Redis URL"):
        configure("t", {"remote": "localhost:6379"})
    url, options = configure("t", {"fn": "not.imported", "remote": "redis://127.0.0.1:1/0", "timeout": 2})
    assert url == "redis://127.0.0.1:1/0" and options == {"timeout": 2}
