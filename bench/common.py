"""What every benchmark module returns: figures measured against a reference in the same run.

A module `bench/bench_<name>.py` defines `run() -> list[Figure]`. Absolute times drift on
shared machines, so each figure is reported as a ratio to a reference measured in the
same run (a no-op view, raw SQL, raw boto3, easy-thumbnails, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests import helpers
from tests.helpers import free_port


@dataclass
class Figure:
    name: str  # e.g. "thumbnail ms/image"
    sense: float
    unit: str
    goal: str  # e.g. "ratio >= 5"
    met: bool
    reference: float | None = None
    reference_label: str = ""  # e.g. "easy-thumbnails"
    ratio: float | None = None
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Helpers for benchmarks that run Sense's real processes ------------------------------

ROOT = Path(__file__).resolve().parent.parent


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run `manage.py ARGS` with ENV; returns stdout, raises with the output on failure."""
    result = helpers.manage(*args, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def run_child(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m MODULE ARGS` in the project root (with ENV, else this environment), for a
    bench whose work needs a process of its own; returns the JSON object its last line printed."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_env(db_name: str, tmp: str, **extra: str) -> dict[str, str]:
    """The environment for Sense's processes in a bench: production settings on database DB_NAME
    (see recreate_database), Redis db 13 and var/ in TMP, plus EXTRA. The caller's S3 and
    RabbitMQ variables are dropped (EXTRA may set its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "RABBITMQ"))}
    env.update(
        DEBUG="false",
        SECRET_KEY="bench-secret-key",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db_name}",
        REDIS_URL="redis://127.0.0.1:6379/13",
        SENSE_VAR_DIR=tmp,
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def recreate_database(name: str) -> None:
    """Drop the PostgreSQL database NAME (ending its sessions) and create it empty."""
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def in_threads(target: Callable[[], None], count: int) -> None:
    """Run TARGET in COUNT threads at once; return when every one has finished."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; to the whole process group when PROC leads one
    (started with start_new_session), so dramatiq's worker processes go too."""
    if proc.poll() is not None:
        return
    group = os.getpgid(proc.pid) == proc.pid

    def signal_all(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)

    signal_all(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        signal_all(signal.SIGKILL)
        proc.wait()


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this machine's processes, by role: web
    (uvicorn), worker (dramatiq), postgresql, rabbitmq (beam), redis. Differences of two
    readings divided by a count of requests give the CPU each request cost each role."""
    roles = {"uvicorn": "web", "dramatiq": "worker", "postgres": "postgresql", "beam.smp": "rabbitmq"}
    roles["redis-server"] = "redis"
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        role = next((r for key, r in roles.items() if key in command), None)
        if role is not None:
            used[role] = used.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_per(before: dict[str, float], after: dict[str, float], count: float) -> str:
    """'web 0.71, worker 0.45, ...' ms of CPU per one of COUNT between two cpu_seconds()."""
    parts = [f"{role} {(after[role] - before.get(role, 0.0)) * 1000 / count:.2f}" for role in sorted(after)]
    return ", ".join(parts) + " ms"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


@contextmanager
def web(
    env: dict[str, str], tmp: str, *, app: str, factory: bool = False
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The Procfile's web process: uvicorn serving APP (with FACTORY, a function that returns the
    ASGI application) with ENV on a free port; yields (port, process) once it listens. Its log
    goes to TMP/web.log."""
    port = free_port()
    with open(Path(tmp) / "web.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                *(["--factory"] if factory else []),
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_port(port, proc)
            yield port, proc
        finally:
            stop(proc)


@contextmanager
def worker(
    env: dict[str, str], log: Path | None, *, processes: int = 1, threads: int = 8, queues: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """The Procfile's worker: `manage.py rundramatiq` with ENV (on QUEUES only, if given), its
    output to LOG or discarded; stopped with its worker processes at the end."""
    command = [sys.executable, str(ROOT / "manage.py"), "rundramatiq", "--processes", str(processes)]
    command += ["--threads", str(threads), *(["--queues", *queues] if queues else [])]
    with open(log, "wb") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


@contextmanager
def production(env: dict[str, str], tmp: str, *, app: str, worker_threads: int = 8) -> Iterator[int]:
    """The Procfile's web (uvicorn on the ASGI factory APP) and worker (rundramatiq) with ENV;
    yields the web port. Logs go to TMP."""
    with (
        worker(env, Path(tmp) / "worker.log", threads=worker_threads),
        web(env, tmp, app=app, factory=True) as (port, _),
    ):
        yield port
