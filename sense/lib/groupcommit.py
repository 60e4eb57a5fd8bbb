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
from collections.abc import Callable
from typing import Generic, TypeVar

Row = TypeVar("Row")


class _Batch(Generic[Row]):
    __slots__ = ("done", "error", "rows", "taken")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.taken = False  # a thread is writing it
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[Row]):
    """`submit(row)` returns once `write(rows)` has committed a batch holding ROW (or raises
    what that write raised). WRITE runs in a submitter's thread, at most WRITERS batches at
    once, each of at most MAX_ROWS rows; it must commit before returning."""

    def __init__(self, write: Callable[[list[Row]], None], *, writers: int = 2, max_rows: int = 200) -> None:
        self.write = write
        self.writers = writers
        self.max_rows = max_rows
        self._cond = threading.Condition()
        self._open: _Batch[Row] | None = None  # the batch new rows join
        self._writing = 0

    def submit(self, row: Row) -> None:
        with self._cond:
            batch = self._open
            if batch is None:
                batch = self._open = _Batch()
            batch.rows.append(row)
            if len(batch.rows) >= self.max_rows:
                self._open = None  # full: later rows start the next batch
            while not batch.done and (batch.taken or self._writing >= self.writers):
                self._cond.wait()
            if not batch.done:
                batch.taken = True
                self._writing += 1
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
                with self._cond:
                    batch.done = True
                    self._writing -= 1
                    self._cond.notify_all()
        if batch.error is not None:
            raise batch.error
