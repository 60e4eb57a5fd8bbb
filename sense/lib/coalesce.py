"""Coalescing in one process: many marks of the same key between two flushes cost one flush.

Apps use it to debounce work a burst would repeat: live frames that carry the latest state,
and broker wake-ups (a few messages per burst rather than one per event).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sense.coalesce")


class Coalescer:
    """Calls `flush(keys)` from one background thread per process with every key marked since
    the previous call, at most once per `interval`, leading edge: a mark after a quiet interval
    is flushed at once; marks while the thread waits out the interval are flushed together
    when it ends. A storm of marks of one key then costs one flush per interval instead of one
    per mark (e.g. one stats query and one publish), and every mark is followed by a flush
    that starts after it, at most `interval` later.

    The interval runs from the time a flush returns (a `time.monotonic()` reading) as the
    moment its output went out, or from its end if it returns None. A flush that queries then
    sends returns when it sent: the time it takes after that is not added to every interval,
    and what two flushes send is still `interval` apart."""

    def __init__(
        self,
        flush: Callable[[set[Any]], float | None],
        interval: float = 0.1,
        *,
        name: str = "live",
        uses_db: bool = True,
    ) -> None:
        self.flush = flush
        self.interval = interval
        self.name = name
        self.uses_db = uses_db
        self._keys: set[Any] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def mark(self, key: Any) -> None:
        with self._lock:
            self._keys.add(key)
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=f"sense-{self.name}-coalescer", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        from django.db import close_old_connections

        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                keys, self._keys = self._keys, set()
            sent = None
            if keys:
                try:
                    sent = self.flush(keys)
                except Exception:
                    log.exception("%s flush failed", self.name)
                finally:
                    if self.uses_db:
                        try:
                            close_old_connections()
                        except Exception:  # never let it end the thread: the next mark needs it
                            log.warning("%s: could not close database connections", self.name)
            # From when the flush sent (else its end): what it sent is then at least `interval`
            # apart from what the next one sends, however long either one's query took.
            start = sent if sent is not None else time.monotonic()
            time.sleep(max(0.0, start + self.interval - time.monotonic()))

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every marked key has been flushed (for tests and commands)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._keys:
                    break
            time.sleep(0.01)
        time.sleep(self.interval + 0.05)
