"""Group commit: rows that request threads submit at about the same time share one INSERT
and one COMMIT, and each thread returns only once its own row is committed.

No thread of its own and no added wait: a submitter writes at once while fewer than
`writers` writes are in flight (alone, when traffic is light); rows submitted while every
writer is busy gather into one batch, which the first of their threads to get a turn writes
for all of them. Under load a commit then costs a few round trips and one WAL flush for
many requests, and a thread whose row another thread wrote never checks out a database
connection at all.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Generic, TypeVar

Row = TypeVar("Row")


class _Batch(Generic[Row]):
    __slots__ = ("cond", "done", "error", "rows", "taken")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)  # its threads wait here, on the group's lock
        self.rows: list[Row] = []
        self.taken = False  # a thread is writing it
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[Row]):
    """`submit(row)` returns once `write(rows)` has committed a batch holding ROW (or raises
    what that write raised). WRITE runs in a submitter's thread, at most WRITERS batches at
    once, each of at most MAX_ROWS rows; it must commit before returning.

    Each batch's threads wait on a condition of their own: a finished write wakes its own
    batch's threads and one thread of each of the oldest waiting batches that a free writer
    can take, not every waiting thread (under load, dozens of threads woke per write only
    to wait again)."""

    def __init__(self, write: Callable[[list[Row]], None], *, writers: int = 2, max_rows: int = 200) -> None:
        self.write = write
        self.writers = writers
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._open: _Batch[Row] | None = None  # the batch new rows join
        self._queued: deque[_Batch[Row]] = deque()  # batches not taken yet, oldest first
        self._writing = 0

    def submit(self, row: Row) -> None:
        with self._lock:
            batch = self._open
            if batch is None:
                batch = self._open = _Batch(self._lock)
                self._queued.append(batch)
            batch.rows.append(row)
            if len(batch.rows) >= self.max_rows:
                self._open = None  # full: later rows start the next batch
            while not batch.done and (batch.taken or self._writing >= self.writers):
                batch.cond.wait()
            if not batch.done:
                batch.taken = True
                self._writing += 1
                self._queued.remove(batch)
                if self._open is batch:
                    self._open = None
                mine = True
            else:
                mine = False
        if mine:
            try:
                self.write(batch.rows)
            except BaseException as exc:
                batch.error = exc
            finally:
                with self._lock:
                    batch.done = True
                    self._writing -= 1
                    batch.cond.notify_all()
                    # A thread of each batch a free writer can take (one may already be
                    # on its way: a second wake-up only finds it taken and waits again).
                    for queued in islice(self._queued, self.writers - self._writing):
                        queued.cond.notify()
        if batch.error is not None:
            raise batch.error
