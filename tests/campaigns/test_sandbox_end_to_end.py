"""A sandbox campaign end to end over real HTTP: a Dramatiq worker on RabbitMQ sends it, the
sandbox's delayed messages post its webhooks to a live server, the same worker applies them,
and the counters reach delivered and read (delays kept short per connection). And the
newcomer's path in `make run`'s mode, with the seeded demo and the default mix."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
from django.core.management import call_command

from campaigns import services, webhook_views
from campaigns.models import Campaign, Connection, Contact, Delivery, DeliveryEvent, WebhookEvent
from campaigns.providers.sandbox import ERRORS
from sense.models import Tenant
from tests.helpers import clean_env, manage, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _sandbox_on(settings: Any) -> None:
    settings.SANDBOX_ENABLED = True
    webhook_views._connections.clear()


def run_campaign(tenant: Tenant, base_url: str, outcomes: str, contacts: int) -> Campaign:
    for n in range(contacts):
        Contact.objects.create(tenant=tenant, phone=f"+55119777{n:05d}", name=f"Contato {n}")
    connection = services.connection_create(
        tenant=tenant,
        name="Sandbox",
        provider=Connection.Provider.SANDBOX,
        base_url=base_url,
        credentials={"outcomes": outcomes},
        rate_per_minute=0,
    )
    campaign = services.campaign_create(tenant=tenant, name="Teste", message="Olá {{name}}", connection=connection)
    return services.campaign_start(campaign=campaign)


def stats(campaign: Campaign) -> dict[str, int]:
    campaign.refresh_from_db()
    return campaign.stats


def test_a_sandbox_campaign_is_delivered_and_read(
    dramatiq_worker: dramatiq.Worker, live_server: Any, acme: Any
) -> None:
    outcomes = "delivered=100,read=100,reply=0,delivered_after=0.2-0.8,read_after=0.2-0.8"
    campaign = run_campaign(acme, live_server.url, outcomes, 12)

    wait_for(lambda: stats(campaign)["read"] == 12, timeout=60, what="every message read")

    assert stats(campaign) == {
        "total": 12, "pending": 0, "sent": 12, "delivered": 12, "read": 12,
        "failed": 0, "cancelled": 0, "unknown": 0, "replied": 0,
    }  # fmt: skip
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.FINISHED
    events = WebhookEvent.objects.filter(connection=campaign.connection)
    assert events.count() == 36 and set(events.values_list("status", flat=True)) == {"processed"}
    for delivery in Delivery.objects.filter(campaign=campaign):
        history = DeliveryEvent.objects.filter(delivery=delivery).order_by("occurred_at", "id")
        assert [e.status for e in history] == ["sent", "delivered", "read"]
        assert delivery.sent_at <= delivery.delivered_at <= delivery.read_at  # type: ignore[operator]
    call_command("recalc_campaign_stats", "--campaign", str(campaign.pk), "--check")


def test_a_sandbox_campaign_fails_some_with_metas_errors(
    dramatiq_worker: dramatiq.Worker, live_server: Any, acme: Any
) -> None:
    outcomes = "failed=50,delivered=50,read=0,delivered_after=0.2-0.6"
    campaign = run_campaign(acme, live_server.url, outcomes, 20)

    wait_for(lambda: stats(campaign)["failed"] + stats(campaign)["delivered"] == 20, timeout=60, what="outcomes")

    by_status = Counter(Delivery.objects.filter(campaign=campaign).values_list("status", flat=True))
    assert set(by_status) == {"failed", "delivered"} and stats(campaign)["read"] == 0
    for delivery in Delivery.objects.filter(campaign=campaign, status="failed"):
        title, details, _ = ERRORS[int(delivery.error_code)]
        assert delivery.error_message == f"{title}: {details}"
    call_command("recalc_campaign_stats", "--campaign", str(campaign.pk), "--check")


def test_make_runs_demo_draft_is_delivered_and_read_within_a_minute(
    embedded_server: tuple[str, dict[str, str], Path],
) -> None:
    """The newcomer's path in `make run`'s mode (SQLite, in-process worker, seed_demo's sandbox
    connection, the default mix): start the demo draft and watch it through the API."""
    base, demo, var = embedded_server
    env = clean_env(DEBUG="true", SENSE_VAR_DIR=str(var))
    issued = manage("issuetoken", demo["username"], "--tenant", demo["tenant"], "--json", env=env)
    assert issued.returncode == 0, issued.stderr
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {json.loads(issued.stdout)['token']}"})
    draft = next(c for c in client.get("/api/campaigns/").json()["items"] if c["status"] == "draft")
    assert client.post(f"/api/campaigns/{draft['id']}/start/").status_code == 200
    started = time.monotonic()
    seen: list[dict[str, int]] = []

    def moved() -> bool:
        seen.append(client.get(f"/api/campaigns/{draft['id']}/").json()["stats"])
        s = seen[-1]
        return s["pending"] == 0 and s["delivered"] >= 0.8 * s["total"] and s["read"] > 0

    wait_for(moved, timeout=60, interval=1.0, what="the demo draft delivered and read")

    assert time.monotonic() - started < 60
    assert seen[-1]["total"] > 30  # the seeded audience
    # Live, not at the end: delivered rose while messages were still being sent.
    assert any(s["delivered"] > 0 and s["pending"] > 0 for s in seen), seen
