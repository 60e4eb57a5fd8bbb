"""Connections, a running campaign and sent deliveries, created directly as rows."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db.models import F
from django.test import Client
from django.utils import timezone

from campaigns import tracking
from campaigns.models import Campaign, Connection, Delivery, WebhookEvent
from sense.models import Tenant

APP_SECRET = "meta-app-secret"
VERIFY_TOKEN = "meta-verify-token"
JWT_KEY = "evolution-jwt-key-0123456789abcdef0123"

_ids = itertools.count(1)


def make_connection(tenant: Tenant, provider: str, **credentials: str) -> Connection:
    if provider == Connection.Provider.EVOLUTION:
        defaults = {"instance": "acme-main", "api_key": "evolution-api-key"}
    else:
        defaults = {
            "phone_number_id": "1098765",
            "access_token": "cloud-token",
            "app_secret": APP_SECRET,
            "verify_token": VERIFY_TOKEN,
        }
    return Connection.objects.create(
        tenant=tenant,
        name=f"{provider} number",
        provider=provider,
        base_url="http://127.0.0.1:9",
        credentials={**defaults, **credentials},
    )


def make_campaign(connection: Connection, name: str = "Black Friday") -> Campaign:
    return Campaign.objects.create(
        tenant=connection.tenant,
        name=name,
        connection=connection,
        message="Hello {{name}}",
        status=Campaign.Status.RUNNING,
        started_at=timezone.now(),
    )


def make_deliveries(campaign: Campaign, count: int, *, status: str = Delivery.Status.SENT) -> list[Delivery]:
    """COUNT deliveries in STATUS (with a provider id unless not sent yet), counters to match."""
    unsent = status in (Delivery.Status.PENDING, Delivery.Status.SENDING)
    now = timezone.now()
    rows = [
        Delivery(
            tenant_id=campaign.tenant_id,
            campaign=campaign,
            phone=f"+55119{n:08d}",
            text="Hello",
            status=status,
            provider_message_id=None if unsent else f"wamid.{campaign.pk.hex[:6]}.{n}",
            sent_at=None if unsent else now,
            claimed_at=now if status == Delivery.Status.SENDING else None,
        )
        for n in (next(_ids) for _ in range(count))
    ]
    created = Delivery.objects.bulk_create(rows)
    counters = {"total": count, **{name: count for name in Delivery.COUNTERS[status]}}
    Campaign.objects.filter(pk=campaign.pk).update(**{f"stat_{n}": F(f"stat_{n}") + v for n, v in counters.items()})
    campaign.refresh_from_db()
    return created


@pytest.fixture
def evolution_connection(acme: Tenant) -> Connection:
    return make_connection(acme, Connection.Provider.EVOLUTION)


@pytest.fixture
def cloud_connection(acme: Tenant) -> Connection:
    return make_connection(acme, Connection.Provider.CLOUD)


@pytest.fixture
def campaign(evolution_connection: Connection) -> Campaign:
    return make_campaign(evolution_connection)


@pytest.fixture
def cloud_campaign(cloud_connection: Connection) -> Campaign:
    return make_campaign(cloud_connection, name="Cloud campaign")


@pytest.fixture
def deliveries() -> Callable[..., list[Delivery]]:
    return make_deliveries


def post_evolution(connection: Connection, payload: Any, *, suffix: str = "", **headers: str) -> Any:
    """POST PAYLOAD (JSON-encoded unless already bytes or text) to CONNECTION's Evolution
    webhook URL (plus SUFFIX, Evolution's by-event path) with HEADERS; returns the response."""
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    url = f"/api/webhooks/evolution/{connection.webhook_token}/{suffix}"
    return Client().post(url, body, content_type="application/json", headers=headers)


def process_all() -> None:
    """Process every pending webhook event in this thread, as the worker's actor would."""
    for event_id in WebhookEvent.objects.filter(status="pending").values_list("pk", flat=True):
        tracking.process_event(event_id)


def stats(campaign: Campaign) -> dict[str, int]:
    campaign.refresh_from_db()
    return campaign.stats


def recount(campaign: Campaign) -> dict[str, Any]:
    """The stats as recomputed from the deliveries (what the counters must equal)."""
    from campaigns.services import campaign_recalc_stats

    drift = campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False)
    return drift[0].after if drift else stats(campaign)


@pytest.fixture(autouse=True)
def _fresh_connection_cache() -> Any:
    from campaigns import webhook_views

    webhook_views._connections.clear()
    yield
    webhook_views._connections.clear()
