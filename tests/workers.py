"""A real Dramatiq worker for tests: in this process, on the configured broker (RabbitMQ on
the full stack). Tests that use it need committed data: use `transactional_db`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.utils.module_loading import autodiscover_modules


def flush_queues() -> None:
    broker = dramatiq.get_broker()
    autodiscover_modules(*settings.DRAMATIQ_AUTODISCOVER_MODULES)
    for queue in list(broker.get_declared_queues()):
        with contextlib.suppress(Exception):
            broker.flush(queue)


@pytest.fixture
def dramatiq_worker(transactional_db: Any, settings: Any) -> Iterator[dramatiq.Worker]:
    """A started worker (4 threads); queues are flushed before and after. Periodic jobs are
    off: tests call sweepers directly."""
    settings.PERIODIC_ENABLED = False
    flush_queues()
    broker = dramatiq.get_broker()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        flush_queues()


def join(worker: dramatiq.Worker, timeout: float = 30.0) -> None:
    """Wait until every queue is empty and the worker is idle."""
    broker = dramatiq.get_broker()
    for queue in list(broker.get_declared_queues()):
        broker.join(queue, timeout=int(timeout * 1000))
    worker.join()
