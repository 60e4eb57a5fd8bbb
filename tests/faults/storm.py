"""A webhook storm: Evolution status updates for many deliveries, shuffled and partly
duplicated, posted concurrently to a running web process."""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from campaigns.models import Campaign, Connection, Delivery, WebhookEvent
from tests.tracking.conftest import recount, stats
from tests.webhook_payloads import evolution_update


def storm_bodies(deliveries: Iterable[Delivery], *, duplicates: float = 0.2, seed: int = 7) -> list[dict[str, Any]]:
    """DELIVERY_ACK and READ for every delivery, a share of them twice, in random order."""
    rng = random.Random(seed)
    bodies = []
    for delivery in deliveries:
        for status in ("DELIVERY_ACK", "READ"):
            bodies.append(evolution_update(delivery.provider_message_id, status))
            if rng.random() < duplicates:
                bodies.append(evolution_update(delivery.provider_message_id, status))
    rng.shuffle(bodies)
    return bodies


class Storm:
    """Posts bodies from a thread pool; remembers every status code it got."""

    def __init__(self, base_url: str, connection: Connection, threads: int = 8) -> None:
        self.url = f"{base_url}/api/webhooks/evolution/{connection.webhook_token}/"
        self.client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=threads))
        self.pool = ThreadPoolExecutor(threads)
        self.futures: list[Future[int]] = []

    def post(self, bodies: Iterable[dict[str, Any]]) -> list[Future[int]]:
        batch = [self.pool.submit(self._post, body) for body in bodies]
        self.futures += batch
        return batch

    def _post(self, body: dict[str, Any]) -> int:
        try:
            return self.client.post(self.url, json=body).status_code
        except httpx.HTTPError as exc:
            return -1 if not isinstance(exc, httpx.HTTPStatusError) else exc.response.status_code

    def answered(self) -> int:
        return sum(f.done() for f in self.futures)

    def statuses(self) -> list[int]:
        return [f.result() for f in self.futures]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


def settled(campaign: Campaign, total: int) -> bool:
    """Every stored event processed and every delivery read."""
    return (
        not WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING).exists()
        and Delivery.objects.filter(campaign=campaign, status=Delivery.Status.READ).count() == total
    )


def assert_exact(campaign: Campaign, *, posted: int, total: int) -> None:
    """Nothing lost, nothing applied twice: one stored event per 200, all processed, and the
    campaign's counters equal a recount from its deliveries."""
    assert WebhookEvent.objects.count() == posted
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookEvent.Status.PROCESSED}
    counters = stats(campaign)
    assert counters == recount(campaign)
    assert (counters["sent"], counters["delivered"], counters["read"], counters["failed"]) == (total,) * 3 + (0,)
