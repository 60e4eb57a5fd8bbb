"""Keep the garbage collector's full pass short in long-running processes.

CPython's oldest-generation collection walks every tracked object, and most of a Sense
process's objects are made at start-up (modules, classes, URL patterns, settings) and live
until it exits. In the web process a full pass took 65-110 ms and in the worker 137 ms:
every request then in flight waited for it, and those pauses were the webhook p99 of an open
loop at half capacity. `freeze_startup_heap()` collects once, then moves everything alive into
the permanent generation, which no later pass walks: later full passes only walk what was
made since. Called when a process has loaded what it needs (sense.asgi for the web process,
`FreezeHeap` for each worker process).
"""

from __future__ import annotations

import gc
import logging

from dramatiq import Broker, Middleware, Worker

log = logging.getLogger("sense.heap")


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now out of later collections; returns how
    many objects are frozen in all."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's passes", frozen)
    return frozen


class FreezeHeap(Middleware):
    """Dramatiq middleware: freeze the start-up heap once a worker process has booted (its
    actors and Django loaded). Once per process: one that boots a worker again (a test run,
    the embedded worker) keeps its first freeze, as what it made since may become garbage."""

    frozen = False

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if not FreezeHeap.frozen:
            FreezeHeap.frozen = True
            freeze_startup_heap()
