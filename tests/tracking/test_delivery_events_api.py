"""GET /api/deliveries/{id}/events/: the delivery-log modal's rows, tenant-scoped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from campaigns import tracking
from campaigns.models import Campaign
from campaigns.providers import StatusUpdate
from tests.conftest import ApiClient

BASE = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def test_it_lists_every_event_in_order_with_errors(api_alice: ApiClient, campaign: Campaign, deliveries: Any) -> None:
    [delivery] = deliveries(campaign, 1)
    message_id = str(delivery.provider_message_id)
    updates = [
        StatusUpdate(message_id, "read", BASE + timedelta(seconds=9), event="messages.update"),
        StatusUpdate(message_id, "failed", BASE + timedelta(seconds=2), "131026", "Message undeliverable", "statuses"),
        StatusUpdate(message_id, "sent", BASE, event="messages.update"),
    ]
    with transaction.atomic():
        tracking.apply_updates(campaign.tenant_id, campaign.connection_id, updates, received_at=timezone.now())

    response = api_alice.get_json(f"/api/deliveries/{delivery.pk}/events/")

    assert response.status_code == 200
    rows = response.json()
    assert [r["status"] for r in rows] == ["sent", "failed", "read"]
    assert [r["event"] for r in rows] == ["messages.update", "statuses", "messages.update"]
    assert rows[0]["error"] is None
    assert rows[1]["error"] == {"code": "131026", "message": "Message undeliverable"}
    assert datetime.fromisoformat(rows[0]["occurred_at"]) == BASE
    assert set(rows[0]) == {"status", "occurred_at", "received_at", "event", "error"}


def test_a_delivery_without_events_has_an_empty_log(api_alice: ApiClient, campaign: Campaign, deliveries: Any) -> None:
    [delivery] = deliveries(campaign, 1)
    assert api_alice.get_json(f"/api/deliveries/{delivery.pk}/events/").json() == []


def test_it_refuses_another_tenants_delivery(api_charlie: ApiClient, campaign: Campaign, deliveries: Any) -> None:
    [delivery] = deliveries(campaign, 1)

    response = api_charlie.get_json(f"/api/deliveries/{delivery.pk}/events/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unknown_delivery_is_404(api_alice: ApiClient) -> None:
    assert api_alice.get_json("/api/deliveries/999999/events/").status_code == 404


def test_it_needs_authentication(anon_api: ApiClient, campaign: Campaign, deliveries: Any) -> None:
    [delivery] = deliveries(campaign, 1)
    assert anon_api.get_json(f"/api/deliveries/{delivery.pk}/events/").status_code == 401
