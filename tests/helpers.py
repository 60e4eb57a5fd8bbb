"""Helpers for tests that run real processes: free ports, waiting, throwaway services."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> None:
    """Poll PREDICATE until it is true; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on a free port (for tests that stop Redis)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), what="redis-server")
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.kill()
        proc.wait()


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without any full-stack variable, plus OVERRIDES (embedded mode)."""
    drop = {
        "DATABASE_URL",
        "REDIS_URL",
        "RABBITMQ_URL",
        "RABBITMQ_PRIVATE_URL",
        "S3_BUCKET",
        "S3_ENDPOINT_URL",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "S3_REGION",
        "S3_PUBLIC_ENDPOINT_URL",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "SENSE_VAR_DIR",
        "DJANGO_SETTINGS_MODULE",
        "MEDIA_ROOT",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
