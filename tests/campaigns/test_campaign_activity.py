"""The campaign's activity log: every lifecycle change is a line, with who did it or why,
newest first in the API and in the campaign page's panel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, CampaignActivity, Delivery
from campaigns.providers import ProviderError
from campaigns.sending import Claimed, Outcome, record_failure
from tests.conftest import ApiClient
from tests.dashboard.conftest import login


@pytest.fixture(autouse=True)
def _no_senders(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)


def kinds(campaign: Campaign) -> list[str]:
    return list(CampaignActivity.objects.filter(campaign=campaign).order_by("at", "id").values_list("kind", flat=True))


def test_an_operators_lifecycle_is_recorded_with_who_did_it(
    api_alice: ApiClient, alice: Any, evolution: Any, make_contacts: Any
) -> None:
    make_contacts(2)
    created = api_alice.post_json(
        "/api/campaigns/", {"name": "Promo", "connection_id": str(evolution.id), "message": "Oi"}
    ).json()
    campaign_id = created["id"]
    api_alice.patch_json(f"/api/campaigns/{campaign_id}/", {"message": "Oi {{name}}", "tags": ["vip"]})
    api_alice.patch_json(f"/api/campaigns/{campaign_id}/", {"tags": []})
    api_alice.post_json(f"/api/campaigns/{campaign_id}/start/")
    services.campaign_prepare(campaign_id=campaign_id)
    api_alice.post_json(f"/api/campaigns/{campaign_id}/pause/")
    api_alice.post_json(f"/api/campaigns/{campaign_id}/resume/")
    api_alice.post_json(f"/api/campaigns/{campaign_id}/cancel/")

    campaign = Campaign.objects.get(pk=campaign_id)
    assert kinds(campaign) == ["created", "edited", "edited", "started", "paused", "resumed", "cancelled"]
    assert set(CampaignActivity.objects.filter(campaign=campaign).values_list("user", flat=True)) == {alice.pk}
    edited = CampaignActivity.objects.filter(campaign=campaign, kind="edited").order_by("at", "id").first()
    assert edited is not None and edited.data == {"fields": ["message", "tags"]}
    cancelled = CampaignActivity.objects.get(campaign=campaign, kind="cancelled")
    assert cancelled.data == {"cancelled": 2} and "2 unsent" in cancelled.message


def test_the_api_lists_it_newest_first_a_page_at_a_time(
    api_alice: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution)
    base = timezone.now()
    for n in range(5):
        line = CampaignActivity.record(campaign, "edited", f"Edit {n}", n=n)
        CampaignActivity.objects.filter(pk=line.pk).update(at=base + timedelta(seconds=n))

    body = api_alice.get_json(f"/api/campaigns/{campaign.id}/activity/?page=1&page_size=2").json()

    assert body["count"] == 5
    assert [item["message"] for item in body["items"]] == ["Edit 4", "Edit 3"]
    assert set(body["items"][0]) == {"id", "at", "kind", "message", "user", "data"}
    assert body["items"][0]["user"] is None and body["items"][0]["data"] == {"n": 4}
    second = api_alice.get_json(f"/api/campaigns/{campaign.id}/activity/?page=3&page_size=2").json()
    assert [item["message"] for item in second["items"]] == ["Edit 0"]


def test_the_user_is_shown_by_name(api_alice: ApiClient, alice: Any, evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution, status=Campaign.Status.RUNNING)
    services.campaign_pause(campaign=campaign, user=alice)
    item = api_alice.get_json(f"/api/campaigns/{campaign.id}/activity/").json()["items"][0]
    assert (item["kind"], item["user"], item["message"]) == ("paused", "alice", "Paused.")


def test_a_scheduled_start_and_a_worker_finish_are_recorded_without_a_user(
    evolution: Any, make_contacts: Any, make_campaign: Any, alice: Any
) -> None:
    make_contacts(1)
    campaign = make_campaign(evolution, scheduled_at=timezone.now() + timedelta(hours=1))
    services.campaign_start(campaign=campaign, user=alice)
    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at=timezone.now() - timedelta(seconds=1))
    services.campaigns_start_due()
    services.campaign_prepare(campaign_id=campaign.pk)
    Delivery.objects.filter(campaign=campaign).update(status=Delivery.Status.SENT)
    assert services.campaign_finish_if_done(campaign_id=campaign.pk)

    lines = list(CampaignActivity.objects.filter(campaign=campaign).order_by("at", "id"))
    assert [(line.kind, line.user_id) for line in lines] == [
        ("scheduled", alice.pk),
        ("started", None),
        ("finished", None),
    ]
    assert lines[1].message.startswith("Started at its scheduled time")
    assert lines[2].data["stats"]["total"] == 1


def test_an_empty_audience_finishes_and_says_so(evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    assert kinds(campaign) == ["started", "finished"]


def test_an_automatic_pause_says_why(evolution: Any, make_contacts: Any, make_campaign: Any, settings: Any) -> None:
    settings.CAMPAIGN_MAX_CONSECUTIVE_ERRORS = 1
    make_contacts(1)
    campaign = make_campaign(evolution, status=Campaign.Status.RUNNING, stat_total=1, stat_pending=1)
    delivery = Delivery.objects.create(
        tenant=campaign.tenant, campaign=campaign, phone="+5511999990000", text="Hi", status=Delivery.Status.SENDING
    )
    error = ProviderError("permanent", "unauthorized", code="401")

    record_failure(campaign, Claimed(id=delivery.pk, phone=delivery.phone, text="Hi", attempts=1), error, Outcome())

    line = CampaignActivity.objects.get(campaign=campaign, kind="paused")
    assert line.user is None and "provider errors in a row" in line.message
    assert line.data == {"reason": "errors", "errors": 1}


def test_the_page_shows_the_panel_and_pages_it(alice: Any, evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution)
    for n in range(25):
        CampaignActivity.record(campaign, "edited", f"Line {n:02d}", user=alice)
    client = login("alice")

    page = client.get(f"/campaigns/{campaign.id}/").content.decode()
    assert (
        f'hx-get="/campaigns/{campaign.id}/activity/"' in page and f'href="/campaigns/{campaign.id}/activity/"' in page
    )

    fragment = client.get(f"/campaigns/{campaign.id}/activity/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and fragment.count("data-activity-kind") == 20 and "alice" in fragment
    more = client.get(f"/campaigns/{campaign.id}/activity/?page=2", headers={"HX-Request": "true"}).content.decode()
    assert more.count("data-activity-kind") == 5
    whole = client.get(f"/campaigns/{campaign.id}/activity/").content.decode()
    assert "<html" in whole and "Line 24" in whole


def test_another_tenants_log_is_a_404(api_charlie: ApiClient, evolution: Any, make_campaign: Any) -> None:
    campaign = make_campaign(evolution)
    assert api_charlie.get_json(f"/api/campaigns/{campaign.id}/activity/").status_code == 404


def test_a_sender_that_finds_the_connection_disabled_pauses_and_says_so(evolution: Any, make_campaign: Any) -> None:
    from campaigns import sending
    from campaigns.models import Connection

    campaign = make_campaign(evolution, status=Campaign.Status.RUNNING)
    Connection.objects.filter(pk=evolution.pk).update(is_active=False)

    sending.dispatch(campaign.pk)

    line = CampaignActivity.objects.get(campaign=campaign, kind="paused")
    assert (line.message, line.data, line.user) == ("The connection is disabled.", {"reason": "connection"}, None)
