"""Fixtures shared by every test package: real servers on loopback, started and stopped per test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_uvicorn(app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto", **config: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL.

    Returns only once the server accepts connections (uvicorn's own ``started`` flag), and on exit
    runs uvicorn's graceful shutdown, lifespan included.
    """
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning", **config)
    )
    started = threading.Event()
    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        started.set()

    server.startup = startup  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    if not started.wait(30) or not server.started:
        server.should_exit = True
        thread.join(10)
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def run_wsgi(app: Callable[..., Any]) -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded server (one thread a request) on loopback."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="wsgi-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(30)
        server.server_close()


@pytest.fixture
def uvicorn_server() -> Callable[..., Any]:
    """``with uvicorn_server(app) as url:`` serves ``app`` on loopback for the block."""
    return run_uvicorn


@pytest.fixture
def wsgi_server() -> Callable[..., Any]:
    """``with wsgi_server(app) as url:`` serves a WSGI ``app`` on loopback for the block."""
    return run_wsgi
