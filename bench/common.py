"""What every benchmark module returns: figures measured against a reference in the same run.

A module `bench/bench_<name>.py` defines `run() -> list[Figure]`. Absolute times drift on
shared machines, so each figure is reported as a ratio to a reference measured in the
same run (a no-op view, raw SQL, raw boto3, easy-thumbnails, ...).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run `manage.py ARGS` with ENV; returns stdout, raises with the output on failure."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


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


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


@contextmanager
def production(env: dict[str, str], tmp: str, *, app: str, worker_threads: int = 8) -> Iterator[int]:
    """The Procfile's web (uvicorn on the ASGI factory APP) and worker (rundramatiq) with ENV;
    yields the web port. Logs go to TMP."""
    port = free_port()
    web_log = open(Path(tmp) / "web.log", "wb")  # noqa: SIM115
    worker_log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
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
        stdout=web_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "rundramatiq", "--processes", "1", "--threads", str(worker_threads)],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(port, web)
        yield port
    finally:
        stop(web)
        stop(worker)
        web_log.close()
        worker_log.close()
