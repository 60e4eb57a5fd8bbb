"""The campaign JSON API and lifecycle rules (listmonk's), without sending."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, Contact, Delivery
from tests.conftest import ApiClient

STATS_KEYS = {"total", "pending", "sent", "delivered", "read", "failed", "cancelled", "unknown", "replied"}


@pytest.fixture(autouse=True)
def _no_senders(monkeypatch: Any) -> None:
    """These tests check the lifecycle only: senders are not enqueued."""
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)


def start(api: ApiClient, campaign: Campaign) -> dict[str, Any]:
    """Start CAMPAIGN through the API, take its audience snapshot as the worker would, and
    return the campaign as the API shows it then."""
    response = api.post_json(f"/api/campaigns/{campaign.id}/start/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "preparing"
    services.campaign_prepare(campaign_id=campaign.id)
    return dict(api.get_json(f"/api/campaigns/{campaign.id}/").json())


def test_it_creates_a_draft_and_shows_it(api_alice: ApiClient, evolution: Any) -> None:
    response = api_alice.post_json(
        "/api/campaigns/",
        {"name": "Promo", "connection_id": str(evolution.id), "message": "Hi {{name}}", "tags": ["vip", " vip "]},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft" and body["tags"] == ["vip"]
    assert set(body["stats"]) == STATS_KEYS
    assert {"id", "name", "status", "connection_id", "scheduled_at", "started_at", "finished_at"} <= set(body)

    listed = api_alice.get_json("/api/campaigns/").json()
    assert listed["count"] == 1 and listed["items"][0]["id"] == body["id"]
    detail = api_alice.get_json(f"/api/campaigns/{body['id']}/").json()
    assert detail["connection_id"] == str(evolution.id)


def test_it_refuses_a_connection_of_another_tenant(api_charlie: ApiClient, evolution: Any) -> None:
    response = api_charlie.post_json(
        "/api/campaigns/", {"name": "x", "connection_id": str(evolution.id), "message": "hi"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_connection"


def test_starting_snapshots_the_audience_once_per_contact_without_opted_out(
    api_alice: ApiClient, acme: Any, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(3, tags=["vip"], attributes={"city": "Recife"})
    make_contacts(2, start=10, tags=["other"])
    make_contacts(1, start=20, tags=["vip"], opted_out=True)
    campaign = make_campaign(evolution, tags=["vip", "missing"], message="Oi {{name}} de {{city}}{{nope}}")

    body = start(api_alice, campaign)
    assert body["status"] == "running" and body["started_at"] and body["prepared_at"]
    assert body["stats"]["total"] == 3 and body["stats"]["pending"] == 3
    assert body["preparation"] is None
    deliveries = Delivery.objects.filter(campaign=campaign)
    assert sorted(d.text for d in deliveries) == [f"Oi Contact {i} de Recife" for i in range(3)]
    assert not deliveries.filter(contact__opted_out=True).exists()
    # Taking the snapshot again adds nobody twice.
    assert services.campaign_prepare(campaign_id=campaign.id).created == 0
    assert deliveries.count() == 3


def test_an_empty_audience_finishes_at_once(api_alice: ApiClient, evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution)
    body = start(api_alice, campaign)
    assert body["status"] == "finished" and body["stats"]["total"] == 0 and body["finished_at"]


def test_a_future_start_time_schedules_and_can_go_back_to_draft(
    api_alice: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution, scheduled_at=timezone.now() + timedelta(hours=1))
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/start/").json()["status"] == "scheduled"
    assert Delivery.objects.filter(campaign=campaign).count() == 0
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/unschedule/").json()["status"] == "draft"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("draft", "pause"),
        ("draft", "resume"),
        ("draft", "cancel"),
        ("scheduled", "pause"),
        ("scheduled", "start"),
        ("preparing", "start"),
        ("preparing", "resume"),
        ("running", "start"),
        ("running", "resume"),
        ("paused", "pause"),
        ("paused", "start"),
        ("finished", "cancel"),
        ("finished", "pause"),
        ("cancelled", "resume"),
        ("cancelled", "start"),
    ],
)
def test_it_refuses_transitions_the_lifecycle_does_not_allow(
    status: str, action: str, api_alice: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution, status=status)
    response = api_alice.post_json(f"/api/campaigns/{campaign.id}/{action}/")
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert response.json()["error"]
    campaign.refresh_from_db()
    assert campaign.status == status


def test_pause_resume_and_cancel_follow_the_lifecycle(
    api_alice: ApiClient, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(4)
    campaign = make_campaign(evolution)
    start(api_alice, campaign)
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/pause/").json()["status"] == "paused"
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/resume/").json()["status"] == "running"
    body = api_alice.post_json(f"/api/campaigns/{campaign.id}/cancel/").json()
    assert body["status"] == "cancelled" and body["finished_at"]
    assert body["stats"]["cancelled"] == 4 and body["stats"]["pending"] == 0
    assert set(Delivery.objects.filter(campaign=campaign).values_list("status", flat=True)) == {"cancelled"}


def test_only_drafts_can_be_edited(api_alice: ApiClient, evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution)
    response = api_alice.patch_json(f"/api/campaigns/{campaign.id}/", {"message": "New {{name}}", "tags": ["a"]})
    assert response.status_code == 200 and response.json()["message"] == "New {{name}}"
    Campaign.objects.filter(pk=campaign.pk).update(status="paused")
    response = api_alice.patch_json(f"/api/campaigns/{campaign.id}/", {"message": "Later"})
    assert response.status_code == 409 and response.json()["code"] == "not_editable"


def test_deliveries_are_listed_with_a_status_filter_and_pages(
    api_alice: ApiClient, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(60)
    campaign = make_campaign(evolution)
    start(api_alice, campaign)
    first = Delivery.objects.filter(campaign=campaign).order_by("pk").first()
    assert first is not None
    Delivery.move(
        first.pk, from_status="pending", to_status="failed", error_code="131026", error_message="Message undeliverable"
    )

    page1 = api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/").json()
    page2 = api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/?page=2").json()
    assert page1["count"] == 60 and len(page1["items"]) == 50 and len(page2["items"]) == 10
    item = page1["items"][0]
    assert set(item) >= {
        "id",
        "phone",
        "status",
        "provider_message_id",
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
        "error",
    }
    failed = api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/?status=failed").json()
    assert failed["count"] == 1 and failed["items"][0]["error"] == "Message undeliverable"
    assert api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/?status=bogus").status_code == 422


def test_opted_out_contacts_added_later_are_still_left_out(
    api_alice: ApiClient, acme: Any, evolution: Any, make_campaign: Any
) -> None:
    Contact.objects.create(tenant=acme, phone="+5511988887777", name="Out", opted_out=True)
    campaign = make_campaign(evolution)
    assert start(api_alice, campaign)["stats"]["total"] == 0
