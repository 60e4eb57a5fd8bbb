"""The production processes for end-to-end tests: uvicorn (web, HTTP and WebSockets) and
`rundramatiq` (worker) as subprocesses on the test database, Redis, RabbitMQ and S3."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from tests.helpers import ROOT, clean_env, free_port, manage, port_open, wait_for, wait_until_gone_from_postgresql


def stack_env(**overrides: str) -> dict[str, str]:
    """The test run's environment, with DATABASE_URL pointing at the test database."""
    db = connections["default"].settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env.pop("DATABASE_TEST_NAME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    application_name: str = ""  # its PGAPPNAME, when it uses the test database

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Send SIG to the whole process group (a dramatiq parent and its worker processes),
        SIGKILL it if it has not exited after TIMEOUT seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if sig == signal.SIGKILL and self.application_name:
            wait_until_gone_from_postgresql(self.application_name)  # what it committed is final

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    tmp: Path
    processes: list[Process] = field(default_factory=list)

    def start_worker(self, *args: str, name: str = "worker") -> Process:
        process = start_worker(self.env, self.tmp / f"{name}-{len(self.processes)}.log", *args, name=name)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in self.processes)


def start_worker(env: dict[str, str], log: Path, *args: str, name: str = "worker") -> Process:
    """`manage.py rundramatiq` (one process, 4 threads, dramatiq's ARGS) in a process group of
    its own with ENV, its output in LOG. Its PGAPPNAME lets `stop(SIGKILL)` wait for its
    database sessions to end."""
    application_name = f"sense-test-{name}-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4", *args],
        cwd=ROOT,
        env={**env, "PGAPPNAME": application_name},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Process(name, proc, log, application_name)


def start_web(env: dict[str, str], tmp: Path, *options: str, port: int | None = None) -> tuple[str, Process]:
    """uvicorn serving sense.asgi with ENV (and uvicorn's OPTIONS) on PORT (default: a free
    one), its output in TMP/web.log; returns (base URL, process), or fails with that output if
    it never listens."""
    port = port or free_port()
    log = tmp / "web.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "sense.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *options,
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process = Process("web", proc, log)
    try:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
    except AssertionError:
        process.stop()
        raise AssertionError(process.output()) from None
    return f"http://127.0.0.1:{port}", process


@contextmanager
def running_stack(env: dict[str, str], tmp: Path, *, worker: bool = True) -> Iterator[Stack]:
    """uvicorn and, if WORKER, one worker with ENV. When the block raises, their logs are
    printed; every process started in it is stopped at the end."""
    base_url, web = start_web(env, tmp)
    stack = Stack(base_url=base_url, env=env, tmp=tmp, processes=[web])
    try:
        if worker:
            stack.start_worker()
        yield stack
    except Exception:
        print(stack.logs())
        raise
    finally:
        for process in reversed(stack.processes):
            process.stop()


@pytest.fixture
def live_stack(transactional_db: Any, tmp_path: Path) -> Iterator[Stack]:
    """uvicorn and one worker on the full stack; data made in the test must be committed."""
    # The proxy may fetch from this machine (the postdeploy check proxies the app's own image);
    # sandbox connections work (their webhooks come back to this server).
    env = stack_env(
        ALLOWED_HOSTS="127.0.0.1,localhost",
        COOKIE_SECURE="false",
        MEDIA_PROXY_TRUSTED_HOSTS="127.0.0.1",
        SANDBOX_ENABLED="true",
    )
    with running_stack(env, tmp_path) as stack:
        yield stack


@pytest.fixture(scope="module")
def embedded_server(  # `make run`'s mode: SQLite, local files, in-process tasks; no full-stack variable
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], Path]]:
    var = tmp_path_factory.mktemp("embedded-var")
    port = free_port()
    env = clean_env(
        DEBUG="true",
        SENSE_VAR_DIR=str(var),
        MEDIA_PROXY_TRUSTED_HOSTS="127.0.0.1",
        SANDBOX_WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}",  # as `make run` sets it from PORT
    )
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    seed = manage("seed_demo", "--json", env=env)
    assert seed.returncode == 0, seed.stderr
    demo = json.loads(seed.stdout)
    base_url, web = start_web(env, var, port=port)
    try:
        yield base_url, {**demo, "var": str(var)}, var
    finally:
        web.stop()
