"""Group commit: concurrent submitters share one write, each returns after its row's write."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sense.lib import groupcommit
from sense.lib.groupcommit import GroupCommit


def test_a_lone_row_is_written_at_once() -> None:
    writes: list[list[int]] = []
    group = GroupCommit(writes.append)
    group.submit(1)
    group.submit(2)
    assert writes == [[1], [2]]


def test_rows_arriving_during_a_write_share_the_next_one() -> None:
    writes: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()
    returned: dict[int, float] = {}

    def write(rows: list[int]) -> None:
        if not writes:
            first_started.set()
            release.wait(5)
        writes.append(list(rows))
        time.sleep(0.01)

    group = GroupCommit(write, writers=1)

    def submit(n: int) -> None:
        group.submit(n)
        returned[n] = time.monotonic()

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert first_started.wait(5)
    others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
    for thread in others:
        thread.start()
    time.sleep(0.1)
    assert returned == {}  # nobody answers before its row is written
    released = time.monotonic()
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert writes[0] == [0]
    assert sorted(writes[1]) == [1, 2, 3, 4, 5] and len(writes) == 2
    assert all(at >= released for at in returned.values())


def test_a_failed_write_fails_every_row_of_its_batch_and_not_the_next() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def write(rows: list[int]) -> None:
        calls.append(list(rows))
        if len(calls) == 1:
            started.set()
            release.wait(5)
        elif len(calls) == 2:
            raise RuntimeError("database down")

    group = GroupCommit(write, writers=1)
    errors: dict[int, str] = {}

    def submit(n: int) -> None:
        try:
            group.submit(n)
        except RuntimeError as exc:
            errors[n] = str(exc)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=submit, args=(n,)) for n in (1, 2)]
    for thread in others:
        thread.start()
    time.sleep(0.1)
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert errors == {1: "database down", 2: "database down"}
    group.submit(3)
    assert calls[-1] == [3]


def test_batches_hold_at_most_max_rows() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def write(rows: list[int]) -> None:
        gate.wait(5)
        sizes.append(len(rows))

    group = GroupCommit(write, writers=1, max_rows=3)
    threads = [threading.Thread(target=group.submit, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert sum(sizes) == 10 and max(sizes) <= 3


@pytest.mark.parametrize("writers", [1, 2, 4])
def test_every_row_is_written_exactly_once_under_contention(writers: int) -> None:
    written: list[int] = []
    lock = threading.Lock()

    def write(rows: list[int]) -> None:
        time.sleep(0.001)
        with lock:
            written.extend(rows)

    group = GroupCommit(write, writers=writers)

    def submitter(k: int) -> None:
        for i in range(50):
            group.submit(k * 100 + i)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(written) == sorted(k * 100 + i for k in range(16) for i in range(50))


def test_queued_batches_use_every_free_writer_when_writes_end_together() -> None:
    hold = threading.Event()
    both = threading.Barrier(2, timeout=3)  # the two queued batches must be in flight at once
    held = threading.Barrier(3, timeout=3)  # the two first writes have started (and this thread)
    written: list[list[int]] = []

    def write(rows: list[int]) -> None:
        if rows[0] < 2:
            held.wait()
            hold.wait(5)
        else:
            both.wait()
        written.append(sorted(rows))

    group = GroupCommit(write, writers=2, max_rows=2)
    first = [threading.Thread(target=group.submit, args=(n,)) for n in (0, 1)]
    for thread in first:
        thread.start()
    held.wait()
    queued = [threading.Thread(target=group.submit, args=(n,)) for n in range(2, 6)]
    for thread in queued:
        thread.start()
    time.sleep(0.2)  # rows 2-5 form two full batches behind the two writes
    hold.set()
    for thread in [*first, *queued]:
        thread.join(5)
    assert not both.broken
    assert sorted(n for rows in written for n in rows) == list(range(6))
    assert sorted(len(rows) for rows in written) == [1, 1, 2, 2]


def test_a_finished_write_wakes_its_own_rows_and_the_next_batch_not_every_waiting_thread(monkeypatch: Any) -> None:
    wakeups = 0

    class Counting(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            nonlocal wakeups
            woke = super().wait(timeout)
            wakeups += 1
            return woke

    monkeypatch.setattr(groupcommit.threading, "Condition", Counting)
    gate = threading.Event()
    written: list[int] = []

    def write(rows: list[int]) -> None:
        gate.wait(5)
        time.sleep(0.005)  # a round trip: the woken threads are waiting again before it ends
        written.extend(rows)

    group = GroupCommit(write, writers=1, max_rows=2)
    threads = [threading.Thread(target=group.submit, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # one write held, 39 rows waiting in batches of 2 behind it
    gate.set()
    for thread in threads:
        thread.join(5)
    assert sorted(written) == list(range(40))
    # About two wake-ups per row (its batch taken, its batch done) where waking every
    # waiting thread after each write made it about 20 per row.
    assert wakeups <= 3 * 40
