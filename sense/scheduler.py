"""Periodic work (sweepers, due campaigns) run inside every Dramatiq worker process.

Apps register functions with `@periodic(seconds)` in their `tasks.py`. The `Periodic`
middleware starts one thread per worker process that calls each function on its
interval. Several workers may run the same sweeper at once: every sweeper claims its
rows with conditional UPDATEs, so running twice is harmless. In embedded mode the
in-process worker boots the same middleware.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dramatiq
from django.db import close_old_connections
from dramatiq.middleware import Middleware

log = logging.getLogger("sense.scheduler")


@dataclass
class Job:
    name: str
    func: Callable[[], object]
    seconds: float
    next_run: float = field(default=0.0)


_jobs: dict[str, Job] = {}


def periodic(seconds: float) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Register FUNC to run every SECONDS in each worker process."""

    def register(func: Callable[[], object]) -> Callable[[], object]:
        name = f"{func.__module__}.{func.__qualname__}"
        _jobs[name] = Job(name=name, func=func, seconds=seconds)
        return func

    return register


def jobs() -> list[Job]:
    return list(_jobs.values())


def run_due(now: float | None = None) -> list[str]:
    """Run every job whose time has come; returns their names. Errors are logged, not raised."""
    now = time.monotonic() if now is None else now
    ran = []
    for job in jobs():
        if now < job.next_run:
            continue
        job.next_run = now + job.seconds
        try:
            close_old_connections()
            job.func()
            ran.append(job.name)
        except Exception:
            log.exception("periodic job %s failed", job.name)
        finally:
            close_old_connections()
    return ran


class Periodic(Middleware):
    """Dramatiq middleware: a ticker thread per worker process."""

    def __init__(self, tick: float = 1.0) -> None:
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from django.conf import settings

        if not getattr(settings, "PERIODIC_ENABLED", True):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sense-periodic", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            run_due()
