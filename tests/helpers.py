"""Helpers for tests that run real processes: free ports, waiting, throwaway services."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stable_port(low: int = 20_000, high: int = 32_000) -> int:
    """A free port outside the kernel's ephemeral range, for a server that restarts."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port outside the ephemeral range")


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> None:
    """Poll PREDICATE until it is true; fail after TIMEOUT seconds, with the last error the
    predicate raised (a server not up yet raises; that is not a failure until the timeout)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last error: {last!r}") from last


def wait_until_gone_from_postgresql(application_name: str, timeout: float = 30.0) -> None:
    """Wait until no PostgreSQL backend has APPLICATION_NAME (a process started with
    PGAPPNAME). After its client is SIGKILLed, a backend first finishes what it already
    received (a COMMIT the worker had sent still lands) or rolls back, then exits: only
    then is the state the process left final."""
    from django.db import connection

    def gone() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
            return cursor.fetchone()[0] == 0  # type: ignore[index]

    wait_for(gone, timeout=timeout, interval=0.05, what=f"{application_name}'s database sessions to end")


def at_once(func: Callable[[], T], threads: int) -> list[T]:
    """Call FUNC from THREADS threads released together; returns their results. Each thread
    closes its own database connection."""
    from django.db import connection

    results: list[T] = []
    barrier = threading.Barrier(threads)

    def run() -> None:
        try:
            barrier.wait()
            results.append(func())
        finally:
            connection.close()

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return results


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


class RabbitmqNode:
    """A throwaway RabbitMQ node of its own (name, ports, data and config), for tests that stop
    the broker: the machine's shared node is never touched. `stop()` and `start()` keep the
    data directory, so durable queues and persistent messages survive like a real restart."""

    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self, home: Path) -> None:
        self.home = home
        # Below the ephemeral range: while the node is down no outgoing connection can take
        # its port (a client retrying a closed ephemeral port may even connect to itself).
        self.port = stable_port()
        self.dist_port = stable_port()
        self.name = f"sense-test-{os.getpid()}-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "log.console = true\nlog.console.level = warning\n"
        )
        (home / "rabbitmq-env.conf").write_text("")  # not the machine's (it names the shared node)
        (home / "enabled_plugins").write_text("[].\n")

    def start(self, timeout: float = 60) -> None:
        env = {
            **os.environ,
            "HOME": str(self.home),  # its own Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.home / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with (self.home / "node.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: port_open(self.port), timeout=timeout, interval=0.1, what=f"RabbitMQ node {self.name}")

    def stop(self) -> None:
        """Stop the node (as `systemctl stop` does: SIGTERM, then SIGKILL after a while)."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None
        wait_for(lambda: not port_open(self.port), timeout=10, what="the node to go")

    def log(self) -> str:
        path = self.home / "node.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextmanager
def rabbitmq_node(home: Path) -> Iterator[RabbitmqNode]:
    node = RabbitmqNode(home)
    node.start()
    try:
        yield node
    finally:
        node.stop()
