"""Over real HTTP: the provider simulator posts webhooks to a live server, a real Dramatiq
worker on RabbitMQ applies them, and the counters equal a recount after the storm."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import dramatiq
import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from campaigns import tracking
from campaigns.models import Connection, Delivery, DeliveryEvent, PendingStatus, WebhookEvent
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator
from tests.tracking.conftest import APP_SECRET, JWT_KEY, make_campaign, make_connection, make_deliveries, stats
from tests.tracking.test_status_rules import BASE, expected_state
from tests.webhook_payloads import EVOLUTION_NAMES, cloud_notification, cloud_status, evolution_jwt, evolution_update

pytestmark = pytest.mark.slow


def all_processed(timeout: float = 30.0) -> None:
    wait_for(
        lambda: not WebhookEvent.objects.filter(status="pending").exists(), timeout=timeout, what="events processed"
    )


def test_a_storm_of_reordered_duplicated_webhooks_ends_exact(
    dramatiq_worker: dramatiq.Worker, live_server: Any, acme: Any
) -> None:
    evolution = make_connection(acme, Connection.Provider.EVOLUTION, jwt_key=JWT_KEY)
    cloud = make_connection(acme, Connection.Provider.CLOUD)
    campaigns = {evolution.pk: make_campaign(evolution, "Evolution"), cloud.pk: make_campaign(cloud, "Cloud")}
    rng = random.Random(20251129)
    plan: dict[int, list[tuple[str, int]]] = {}
    posts: list[tuple[str, Any, dict[str, str], str | None]] = []
    sim = ProviderSimulator()
    for connection in (evolution, cloud):
        for delivery in make_deliveries(campaigns[connection.pk], 12):
            events = [(rng.choice(["sent", "delivered", "read", "failed"]), rng.randint(0, 5)) for _ in range(4)]
            events += rng.sample(events, 2)  # duplicates
            plan[delivery.pk] = events
            for kind, seconds in events:
                when = BASE + timedelta(seconds=seconds)
                if connection is evolution:
                    url = f"{live_server.url}/api/webhooks/evolution/{connection.webhook_token}/messages-update"
                    body = evolution_update(
                        str(delivery.provider_message_id), EVOLUTION_NAMES[kind], date_time=when.isoformat()
                    )
                    posts.append((url, body, {"Authorization": f"Bearer {evolution_jwt(JWT_KEY)}"}, None))
                else:
                    url = f"{live_server.url}/api/webhooks/whatsapp/{connection.webhook_token}/"
                    item = cloud_status(
                        str(delivery.provider_message_id),
                        kind,
                        timestamp=int(when.timestamp()),
                        error=(131026, "Message undeliverable") if kind == "failed" else None,
                    )
                    posts.append((url, cloud_notification([item]), {}, APP_SECRET))
    rng.shuffle(posts)

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(lambda p: sim.post_webhook(p[0], p[1], headers=p[2], app_secret=p[3]), posts),
        )
    assert codes == [200] * len(posts)
    all_processed()

    assert WebhookEvent.objects.count() == len(posts)
    for delivery in Delivery.objects.all():
        expected = expected_state(plan[delivery.pk], delivery.sent_at)
        assert delivery.status == expected["status"], plan[delivery.pk]
        assert DeliveryEvent.objects.filter(delivery=delivery).count() == len(plan[delivery.pk])
    for campaign in campaigns.values():
        counters = stats(campaign)
        assert counters["total"] == 12
        by_status = {s: Delivery.objects.filter(campaign=campaign, status=s).count() for s in Delivery.Status.values}
        assert counters["read"] == by_status["read"]
        assert counters["delivered"] == by_status["read"] + by_status["delivered"]
        assert counters["failed"] == by_status["failed"]
    call_command("recalc_campaign_stats", "--all", "--check")  # raises CommandError on any drift


def test_webhooks_racing_the_send_response_are_applied_once(
    dramatiq_worker: dramatiq.Worker, live_server: Any, acme: Any
) -> None:
    """Evolution fires send.message (and here the receipts too) while it is still answering
    the send call: the events arrive before, during or after the id is recorded."""
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection)
    rows = make_deliveries(campaign, 8, status=Delivery.Status.SENDING)
    webhook_url = f"{live_server.url}/api/webhooks/evolution/{connection.webhook_token}/"

    with ProviderSimulator() as sim:

        def provider_posts_webhooks(record: dict[str, Any]) -> None:
            for status in ("PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "DELIVERY_ACK"):
                event = "send.message" if status == "PENDING" else "messages.update"
                assert sim.post_webhook(webhook_url, sim.evolution_status(record, status, event=event)) == 200

        sim.webhook_hook = provider_posts_webhooks
        with httpx.Client(base_url=sim.base_url) as client:
            for delivery in rows:
                # What the campaign sender does: call the provider, record the id, apply early events.
                answer = client.post(
                    "/message/sendText/acme-main",
                    json={"number": delivery.phone.lstrip("+"), "text": "Hello"},
                    headers={"apikey": "evolution-api-key"},
                )
                message_id = answer.json()["key"]["id"]
                assert Delivery.move(
                    delivery.pk,
                    from_status="sending",
                    to_status="sent",
                    provider_message_id=message_id,
                    sent_at=timezone.now(),
                )
                tracking.apply_early_events(delivery.pk)
        wait_for(lambda: len(sim.webhooks) == 5 * len(rows), timeout=60, what="all webhooks posted")
    assert not sim.hook_errors
    all_processed()
    tracking.sweep(grace=0)  # what the periodic sweeper would do for any id recorded in a race

    assert set(Delivery.objects.values_list("status", flat=True)) == {"read"}
    assert not PendingStatus.objects.exists()
    counters = stats(campaign)
    assert (counters["pending"], counters["sent"], counters["delivered"], counters["read"]) == (0, 8, 8, 8)
    assert DeliveryEvent.objects.count() == 5 * len(rows)
    call_command("recalc_campaign_stats", "--campaign", str(campaign.pk), "--check")
