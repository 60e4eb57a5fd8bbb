"""Test sends: the campaign's message, rendered for a contact, sent at once through its
connection; nothing counted, no delivery, but a line in the activity log."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.models import Campaign, CampaignActivity, Connection, Delivery
from tests.campaigns.conftest import phone
from tests.conftest import ApiClient
from tests.dashboard.conftest import login
from tests.simulator import ProviderSimulator


@pytest.fixture
def campaign(evolution: Connection, make_contacts: Any, make_campaign: Any) -> Campaign:
    make_contacts(3)
    return make_campaign(
        evolution, status=Campaign.Status.RUNNING, message="Oi {{name}}, seu código é {{code}}", stat_total=3
    )


def test_it_sends_the_message_rendered_for_the_contact_and_counts_nothing(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign, make_contacts: Any, alice: Any
) -> None:
    (maria,) = make_contacts(1, start=50, attributes={"code": "X9"})
    stats = dict(campaign.stats)

    response = api_alice.post_json(
        f"/api/campaigns/{campaign.id}/test/", {"phone": "+55 11 98888-7777", "contact_id": maria.pk}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["phone"] == "+5511988887777" and body["text"] == "Oi Contact 50, seu código é X9"
    assert body["connection_id"] == str(campaign.connection_id) and body["message_id"]
    assert [(r["number"], r["text"]) for r in sim.sends] == [("5511988887777", "Oi Contact 50, seu código é X9")]
    campaign.refresh_from_db()
    assert campaign.stats == stats
    assert not Delivery.objects.filter(campaign=campaign).exists()
    line = CampaignActivity.objects.get(campaign=campaign, kind="test_send")
    assert line.user == alice and "+5511988887777" in line.message and line.data["ok"] is True


def test_without_a_contact_it_renders_for_the_one_with_that_phone_or_a_sample(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign
) -> None:
    api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)})
    api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": "+5511977776666"})
    assert [r["text"] for r in sim.sends] == ["Oi Contact 1, seu código é ", "Oi , seu código é "]


@pytest.mark.parametrize("status", [Campaign.Status.CANCELLED, Campaign.Status.FINISHED])
def test_a_cancelled_or_finished_campaign_sends_no_test(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign, status: str
) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    response = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)})
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"
    assert sim.sends == []


@pytest.mark.parametrize("status", [Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED])
def test_any_other_status_may_send_one(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign, status: str
) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)}).status_code == 200


def test_a_provider_refusal_is_a_clear_error_and_is_logged(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign
) -> None:
    sim.fail_next(400)

    response = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)})

    assert response.status_code == 502
    assert response.json() == {
        "error": f"The provider refused the test message: not_on_whatsapp: number is not on WhatsApp ({phone(1)[1:]})",
        "code": "provider_error",
    }
    line = CampaignActivity.objects.get(campaign=campaign, kind="test_send")
    assert line.data["ok"] is False and line.data["error_code"] == "not_on_whatsapp"


def test_the_connections_rate_limit_holds(
    api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign, evolution: Connection
) -> None:
    Connection.objects.filter(pk=evolution.pk).update(rate_per_minute=1)

    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)}).status_code == 200
    second = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(2)})

    assert second.status_code == 429 and second.json()["code"] == "rate_limited"
    assert len(sim.sends) == 1


def test_bad_input_is_refused(api_alice: ApiClient, sim: ProviderSimulator, campaign: Campaign, evolution: Any) -> None:
    bad_phone = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": "12"})
    assert bad_phone.status_code == 422 and bad_phone.json()["code"] == "invalid_phone"
    no_contact = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1), "contact_id": 999999})
    assert no_contact.status_code == 422 and no_contact.json()["code"] == "invalid_contact"
    Connection.objects.filter(pk=evolution.pk).update(is_active=False)
    disabled = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)})
    assert disabled.status_code == 409 and disabled.json()["code"] == "connection_inactive"
    assert sim.sends == []


def test_another_tenants_campaign_is_a_404(api_charlie: ApiClient, sim: ProviderSimulator, campaign: Campaign) -> None:
    assert api_charlie.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": phone(1)}).status_code == 404
    assert sim.sends == []


def test_the_page_form_sends_one(alice: Any, sim: ProviderSimulator, campaign: Campaign) -> None:
    client = login("alice")
    page = client.get(f"/campaigns/{campaign.id}/").content.decode()
    assert f'hx-post="/campaigns/{campaign.id}/test/"' in page

    sent = client.post(f"/campaigns/{campaign.id}/test/", {"phone": phone(1)}, headers={"HX-Request": "true"})
    assert "data-test-sent" in sent.content.decode() and len(sim.sends) == 1
    refused = client.post(f"/campaigns/{campaign.id}/test/", {"phone": "12"}, headers={"HX-Request": "true"})
    assert "form-error" in refused.content.decode() and len(sim.sends) == 1
    plain = client.post(f"/campaigns/{campaign.id}/test/", {"phone": phone(2)})
    assert plain.status_code == 302 and len(sim.sends) == 2
