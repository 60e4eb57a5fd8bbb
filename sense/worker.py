"""The embedded task worker: in embedded mode (no RABBITMQ_URL) the web process runs the
Dramatiq actors itself on a StubBroker, so uploads still get thumbnails and campaigns
still send with nothing but `make run`."""

from __future__ import annotations

import logging
import threading

import dramatiq
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

log = logging.getLogger("sense.tasks")

_lock = threading.Lock()
_worker: dramatiq.Worker | None = None


def start_embedded_worker() -> dramatiq.Worker | None:
    """Start the in-process worker once; returns it, or None outside embedded mode."""
    global _worker
    if not settings.TASKS_EMBEDDED:
        return None
    with _lock:
        if _worker is None:
            autodiscover_modules(*settings.DRAMATIQ_AUTODISCOVER_MODULES)
            broker = dramatiq.get_broker()
            broker.emit_after("process_boot")
            _worker = in_process_worker(broker, settings.EMBEDDED_WORKER_THREADS)
            _worker.start()
            log.info(
                "[RABBITMQ] no broker configured: running tasks in-process (%d threads)",
                settings.EMBEDDED_WORKER_THREADS,
            )
    return _worker


def in_process_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    """A worker (not started) for BROKER's only consumer: this process, on the StubBroker.

    The StubBroker lists its delay queues among its plain queues, so a plain worker reads them
    with the plain prefetch (2 per thread): further delayed messages wait unseen in the broker
    until a held one comes due, however soon their own time is (a 1 s delay ran 19 s late
    behind four 20 s ones). As the only consumer, holding every message costs no other worker
    its share."""
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.queue_prefetch = worker.delay_prefetch
    return worker
