"""The sliding-window limiter: never more than the limit in any window, in Redis and in memory."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.conf import settings

from campaigns.ratelimit import LocalLimiter, RedisLimiter
from tests.helpers import at_once


@pytest.fixture(params=["redis", "local"])
def limiter(request: Any) -> Any:
    if request.param == "local":
        return LocalLimiter()
    limiter = RedisLimiter(settings.REDIS_URL)
    limiter.client.delete("sense:rate:test-key", "sense:rate:test-key:hold")
    return limiter


def _hammer(limiter: Any, *, limit: int, window: float, seconds: float, threads: int = 4) -> list[tuple[float, float]]:
    """Acquire from THREADS threads for SECONDS; one (before, after) pair of clock readings
    around the call per unit granted: the grant happened somewhere in between."""
    granted: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < stop:
            before = time.monotonic()
            grant = limiter.acquire("test-key", limit=limit, window=window, n=2)
            after = time.monotonic()
            if grant.granted:
                with lock:
                    granted.extend([(before, after)] * grant.granted)
            else:
                time.sleep(min(grant.wait, 0.05))

    at_once(run, threads)
    return granted


def most_provably_in_one_window(granted: list[tuple[float, float]], window: float) -> int:
    """The most grants that certainly fell inside one window: those whose whole (before,
    after) interval lies in [b, b + WINDOW) for some grant's `before` b. A thread delayed
    after its call (a loaded machine) widens its interval instead of faking an overlap."""
    return max(sum(1 for b, a in granted if b >= start and a < start + window) for start, _ in granted)


def test_no_window_holds_more_than_the_limit(limiter: Any) -> None:
    granted = _hammer(limiter, limit=12, window=0.6, seconds=2.0)
    assert most_provably_in_one_window(granted, 0.6) <= 12
    assert len(granted) >= 3 * 12  # and the budget was used: at least 3 full windows in 2 s


def test_a_hold_stops_every_sender_until_it_ends(limiter: Any) -> None:
    limiter.hold("test-key", 0.3)
    grant = limiter.acquire("test-key", limit=0, window=60, n=1)
    assert grant.granted == 0 and 0 < grant.wait <= 0.3
    time.sleep(0.35)
    assert limiter.acquire("test-key", limit=0, window=60, n=3).granted == 3


def test_a_hold_is_extended_never_shortened_even_by_senders_at_the_same_moment(limiter: Any) -> None:
    limiter.hold("test-key", 0.2)
    limiter.hold("test-key", 60)
    limiter.hold("test-key", 0.2)  # a shorter hold later changes nothing
    seconds = iter([60.0, 0.05] * 10)
    at_once(lambda: limiter.hold("test-key", next(seconds)), threads=20)

    grant = limiter.acquire("test-key", limit=0, window=60, n=1)
    assert grant.granted == 0 and grant.wait > 50


def test_pacing_reserves_one_slot_per_gap_and_a_break_after_every_n(limiter: Any) -> None:
    key = f"pace-{uuid.uuid4().hex}"
    first = limiter.pace(key, gap=1.0, max_wait=2.0, lead=0.1)
    assert first.reserved and 0.05 < first.wait <= 0.1 + 1e-6  # float arithmetic on clock readings
    second = limiter.pace(key, gap=1.0, max_wait=2.0)
    assert second.reserved and 1.0 < second.wait <= 1.1  # one gap after the first slot
    refused = limiter.pace(key, gap=1.0, max_wait=0.5)
    assert not refused.reserved and 1.5 < refused.wait <= 2.1  # too far: nothing reserved
    again = limiter.pace(key, gap=1.0, max_wait=2.5)
    assert again.reserved and abs(again.wait - refused.wait) < 0.05

    breaks = f"pace-{uuid.uuid4().hex}"
    waits = [limiter.pace(breaks, gap=0.0, max_wait=100.0, every=2, pause=10.0).wait for _ in range(4)]
    assert waits[0] < 0.05 and waits[1] < 0.05 and 9.9 < waits[2] < 10.05 and abs(waits[3] - waits[2]) < 0.05


def test_turns_are_shared_and_count_up(limiter: Any) -> None:
    key = f"turn-{uuid.uuid4().hex}"
    assert [limiter.turn(key) for _ in range(3)] == [1, 2, 3]
