"""Passwords, ACL users and TLS: whatever the URL says reaches Redis, and no password reaches a message.

One real redis-server listens twice: a plain port where the ACL user ``alice`` logs in, and a TLS
port (a throwaway CA from trustme) where the default user needs ``requirepass``. A host reads over
TLS while the clients call over the plain port: they meet in the same streams.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from microbatch.remote import RedisUnavailable, RemoteBatcher
from tests._support import wait_until
from tests.conftest import free_port

from .conftest import REDIS_SERVER, ROOT, _pings, host_env


class SecureRedis:
    """redis-server with an ACL user on a plain port and a password on a TLS port."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(directory / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
        self.ca_file = directory / "ca.crt"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.port, self.tls_port = free_port(), free_port()
        config = directory / "redis.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ntls-port {self.tls_port}\n"
            f"tls-cert-file {directory / 'server.crt'}\ntls-key-file {directory / 'server.key'}\n"
            f"tls-ca-cert-file {self.ca_file}\ntls-auth-clients no\n"
            "requirepass default-secret\nuser alice on >alice-secret ~* &* +@all\n"
            f'save ""\nappendonly no\ndir {directory}\n'
        )
        self.process = subprocess.Popen([REDIS_SERVER, str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    @property
    def acl_url(self) -> str:
        return f"redis://alice:alice-secret@127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        return f"rediss://:default-secret@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def secure_redis(tmp_path: Path) -> Iterator[SecureRedis]:
    server = SecureRedis(tmp_path)
    client = redis.Redis.from_url(server.acl_url, socket_timeout=5)
    try:
        wait_until(lambda: _pings(client), "redis-server answers on its plain port")
        yield server
    finally:
        client.close()
        server.stop()


def test_a_host_over_tls_serves_clients_logged_in_as_an_acl_user(secure_redis: SecureRedis, tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    with log.open("wb") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "microbatch", "serve", "tests.remote._targets:echo", "--url", secure_redis.tls_url,
             "--name", "secure", "--report-interval", "0.05"],
            env=host_env(secure_redis.tls_url), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    watcher = redis.Redis.from_url(secure_redis.acl_url, socket_timeout=5)
    try:
        wait_until(lambda: watcher.hlen("microbatch:secure:hosts") > 0 or host.poll() is not None,
                   "the host reports itself in Redis over TLS")
        assert host.poll() is None, log.read_text(errors="replace")
        with RemoteBatcher[str, list[object]]("secure", url=secure_redis.acl_url, timeout=10) as rb:
            assert rb("over tls") == ["over tls", host.pid]
            assert rb.map(["a", "b"]) == [["a", host.pid], ["b", host.pid]]
            assert "alice-secret" not in repr(rb) and "alice:***@" in repr(rb)
        assert "default-secret" not in log.read_text(errors="replace")
    finally:
        watcher.close()
        host.terminate()
        host.wait(30)


def test_a_wrong_password_fails_the_call_with_redis_unavailable_naming_the_refusal(
    secure_redis: SecureRedis,
) -> None:
    url = secure_redis.acl_url.replace("alice-secret", "not-the-password")
    with RemoteBatcher[str, object]("secure", url=url, timeout=10) as rb:
        with pytest.raises(RedisUnavailable) as refused:
            rb("x")
        message = str(refused.value)
        assert "invalid username-password pair" in message and "not-the-password" not in message
