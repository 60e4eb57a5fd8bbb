"""Duplicating a campaign: a new draft with the same settings and audience rules, none of
the original's lifecycle, counters or snapshot."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, CampaignActivity, Delivery, MessageTemplate
from tests.conftest import ApiClient
from tests.dashboard.conftest import login


def finished_campaign(evolution: Any, make_campaign: Any) -> Campaign:
    template = MessageTemplate.objects.create(tenant=evolution.tenant, connection=evolution, name="t", language="pt_BR")
    return make_campaign(
        evolution,
        name="Black Friday",
        message="Oi {{name}}",
        tags=["vip", "sp"],
        template=template,
        template_params={"1": "{{name}}"},
        status=Campaign.Status.FINISHED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        pause_reason="old",
        consecutive_errors=2,
        stat_total=10,
        stat_sent=10,
        audience_count=10,
        prepared_at=timezone.now(),
    )


def test_it_makes_a_draft_with_the_same_settings(
    api_alice: ApiClient, bob: Any, alice: Any, evolution: Any, make_campaign: Any
) -> None:
    original = finished_campaign(evolution, make_campaign)

    response = api_alice.post_json(f"/api/campaigns/{original.id}/duplicate/")

    assert response.status_code == 201, response.content
    copy = Campaign.objects.get(pk=response.json()["id"])
    assert copy.pk != original.pk and copy.name == "Black Friday (copy)"
    assert (copy.status, copy.connection_id, copy.message, copy.tags) == (
        "draft",
        evolution.pk,
        "Oi {{name}}",
        ["vip", "sp"],
    )
    assert (copy.template_id, copy.template_params) == (original.template_id, {"1": "{{name}}"})
    assert copy.stats == dict.fromkeys(Campaign.STAT_NAMES, 0)
    assert (copy.started_at, copy.finished_at, copy.prepared_at, copy.audience_count) == (None, None, None, None)
    assert (copy.pause_reason, copy.consecutive_errors, copy.created_by) == ("", 0, alice)
    assert not Delivery.objects.filter(campaign=copy).exists()
    assert CampaignActivity.objects.get(campaign=copy, kind="duplicated").data == {"source": str(original.pk)}
    assert CampaignActivity.objects.get(campaign=original, kind="duplicated").data == {"copy": str(copy.pk)}


def test_it_copies_every_editable_field_generically(alice: Any, evolution: Any, make_campaign: Any) -> None:
    """A field another feature adds later is copied without touching the duplicate."""
    original = finished_campaign(evolution, make_campaign)
    copy = services.campaign_duplicate(campaign=original, user=alice)
    skipped = services.DUPLICATE_SKIPS | {f"stat_{n}" for n in Campaign.STAT_NAMES} | {"name"}
    for field in Campaign._meta.concrete_fields:
        if field.editable and field.name not in skipped:
            assert getattr(copy, field.attname) == getattr(original, field.attname), field.name


def test_a_long_name_still_fits(alice: Any, evolution: Any, make_campaign: Any) -> None:
    original = make_campaign(evolution, name="x" * 200)
    copy = services.campaign_duplicate(campaign=original, user=alice)
    assert len(copy.name) == 200 and copy.name.endswith(" (copy)")


def test_another_tenants_campaign_is_a_404(api_charlie: ApiClient, evolution: Any, make_campaign: Any) -> None:
    original = make_campaign(evolution)
    assert api_charlie.post_json(f"/api/campaigns/{original.id}/duplicate/").status_code == 404
    assert Campaign.objects.count() == 1


def test_the_page_button_opens_the_new_draft(alice: Any, evolution: Any, make_campaign: Any) -> None:
    original = make_campaign(evolution)
    client = login("alice")
    assert f'action="/campaigns/{original.id}/duplicate/"' in client.get(f"/campaigns/{original.id}/").content.decode()

    response = client.post(f"/campaigns/{original.id}/duplicate/")

    copy = Campaign.objects.exclude(pk=original.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/campaigns/{copy.id}/"
