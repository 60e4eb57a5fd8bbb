"""Core actors: a ping that proves a round trip through the broker to a worker."""

from __future__ import annotations

import dramatiq
from django.core.cache import cache
from django.utils import timezone

PING_TTL = 300


def ping_key(token: str) -> str:
    return f"worker-ping:{token}"


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=10_000)
def worker_ping(token: str) -> None:
    """Mark the ping TOKEN as answered (read by GET /api/ops/worker-ping/<token>/)."""
    if cache.get(ping_key(token)) is not None:
        cache.set(ping_key(token), {"done": True, "at": timezone.now().isoformat()}, PING_TTL)
