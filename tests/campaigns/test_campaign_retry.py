"""Retrying failed deliveries: only what may succeed on a second try goes back to pending,
history and attempts kept, counters exact, and the campaign runs again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import sending, services
from campaigns.models import Campaign, CampaignActivity, Contact, Delivery, DeliveryEvent, MessageTemplate
from tests.conftest import ApiClient
from tests.simulator import ProviderSimulator


@pytest.fixture(autouse=True)
def _no_senders(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)


def failed(
    campaign: Campaign, contact: Contact | None, code: str, *, ago: timedelta = timedelta(minutes=5), **fields: Any
) -> Delivery:
    phone = contact.phone if contact else "erased"
    fields.setdefault("status", Delivery.Status.FAILED)
    fields.setdefault("attempts", 1)
    fields.setdefault("error_message", f"error {code}")
    return Delivery.objects.create(
        tenant=campaign.tenant,
        campaign=campaign,
        contact=contact,
        phone=phone,
        text="Hi",
        error_code=code,
        failed_at=timezone.now() - ago if fields["status"] == Delivery.Status.FAILED else None,
        **fields,
    )


def counted(campaign: Campaign) -> None:
    """Make CAMPAIGN's stored counters those of its deliveries (the fixtures insert rows)."""
    services.campaign_recalc_stats(campaign_ids=[campaign.pk])


def assert_counters_exact(campaign: Campaign) -> None:
    assert services.campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []


@pytest.fixture
def mixed(evolution: Any, make_contacts: Any, make_campaign: Any) -> dict[str, Any]:
    """A finished campaign with one delivery of each kind of outcome."""
    contacts = make_contacts(12)
    campaign = make_campaign(evolution, status=Campaign.Status.FINISHED, finished_at=timezone.now())
    rows = {
        "server_error": failed(campaign, contacts[0], "500"),
        "bad_credentials": failed(campaign, contacts[1], "401", attempts=3),
        "webhook_failed": failed(
            campaign, contacts[2], "131000", provider_message_id="wamid.old", sent_at=timezone.now()
        ),
        "experience_old": failed(campaign, contacts[3], "131049", ago=timedelta(hours=25)),
        "experience_recent": failed(campaign, contacts[4], "131049", ago=timedelta(hours=2)),
        "stopped_marketing": failed(campaign, contacts[5], "131050"),
        "undeliverable": failed(campaign, contacts[6], "131026"),
        "outside_window": failed(campaign, contacts[7], "131047"),
        "not_on_whatsapp": failed(campaign, contacts[8], "not_on_whatsapp"),
        "not_on_whatsapp_before": failed(campaign, contacts[9], "400", error_message="number is not on WhatsApp (55)"),
        "opted_out": failed(campaign, contacts[10], "500"),
        "erased": failed(campaign, None, "500"),
        "unknown": failed(campaign, contacts[11], "timeout", status=Delivery.Status.UNKNOWN),
    }
    Contact.objects.filter(pk=contacts[10].pk).update(opted_out=True)
    DeliveryEvent.objects.create(
        tenant=campaign.tenant,
        delivery=rows["webhook_failed"],
        status="failed",
        occurred_at=timezone.now(),
        event="statuses",
        error_code="131000",
    )
    counted(campaign)
    campaign.refresh_from_db()
    return {"campaign": campaign, **rows}


RETRIED = {"server_error", "bad_credentials", "webhook_failed", "experience_old"}


def test_it_requeues_only_what_may_succeed_and_runs_the_campaign_again(api_alice: ApiClient, mixed: Any) -> None:
    campaign = mixed["campaign"]

    response = api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/")

    assert response.status_code == 200, response.content
    assert response.json() == {"requeued": len(RETRIED)}
    for name, delivery in mixed.items():
        if name == "campaign":
            continue
        delivery.refresh_from_db()
        if name in RETRIED:
            assert delivery.status == Delivery.Status.PENDING, name
            assert (delivery.error_code, delivery.error_message, delivery.failed_at) == ("", "", None), name
        else:
            assert delivery.status != Delivery.Status.PENDING, name
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING and campaign.finished_at is None
    assert campaign.stat_pending == len(RETRIED)
    assert_counters_exact(campaign)


def test_the_history_and_the_attempts_are_kept(api_alice: ApiClient, mixed: Any) -> None:
    campaign = mixed["campaign"]
    api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/")

    credentials = Delivery.objects.get(pk=mixed["bad_credentials"].pk)
    assert credentials.attempts == 3  # counted, not reset
    events = list(DeliveryEvent.objects.filter(delivery=mixed["webhook_failed"]).order_by("id"))
    assert [(e.status, e.event, e.error_code) for e in events] == [
        ("failed", "statuses", "131000"),
        ("pending", "retry", "131000"),
    ]
    retry = DeliveryEvent.objects.get(delivery=mixed["server_error"])
    assert (retry.event, retry.error_code, retry.error_message) == ("retry", "500", "error 500")
    assert not DeliveryEvent.objects.filter(delivery=mixed["undeliverable"]).exists()


def test_it_moves_them_in_one_statement(mixed: Any) -> None:
    campaign = mixed["campaign"]
    with CaptureQueriesContext(connection) as queries:
        assert services.deliveries_retry_failed(campaign=campaign) == len(RETRIED)
    touching = [q["sql"] for q in queries.captured_queries if "campaigns_delivery" in q["sql"] and "UPDATE" in q["sql"]]
    assert len(touching) == 1


def test_free_text_outside_the_window_is_retried_for_a_template_campaign(mixed: Any, evolution: Any) -> None:
    campaign = mixed["campaign"]
    template = MessageTemplate.objects.create(
        tenant=campaign.tenant, connection=evolution, name="promo", language="pt_BR"
    )
    Campaign.objects.filter(pk=campaign.pk).update(template=template)

    assert services.deliveries_retry_failed(campaign=campaign) == len(RETRIED) + 1
    assert Delivery.objects.get(pk=mixed["outside_window"].pk).status == Delivery.Status.PENDING


def test_the_rule_is_a_queryset_filter(mixed: Any) -> None:
    later = timezone.now() + timedelta(hours=23)
    retryable = set(Delivery.objects.filter(campaign=mixed["campaign"]).retryable(later).values_list("pk", flat=True))
    assert retryable == {mixed[n].pk for n in RETRIED | {"experience_recent"}}


def test_a_second_retry_finds_nothing_and_a_draft_cannot_retry(
    api_alice: ApiClient, mixed: Any, make_campaign: Any, evolution: Any
) -> None:
    campaign = mixed["campaign"]
    api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/")
    assert api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/").json() == {"requeued": 0}

    draft = make_campaign(evolution)
    response = api_alice.post_json(f"/api/campaigns/{draft.id}/retry/")
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"


def test_it_is_recorded_with_who_did_it(api_alice: ApiClient, mixed: Any, alice: Any) -> None:
    campaign = mixed["campaign"]
    api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/")

    line = CampaignActivity.objects.get(campaign=campaign, kind="retry")
    assert line.user == alice
    assert line.message.startswith(f"{len(RETRIED)} failed deliveries queued again")
    assert line.data == {"requeued": len(RETRIED)}


def test_another_tenants_campaign_is_a_404(api_charlie: ApiClient, mixed: Any) -> None:
    campaign = mixed["campaign"]
    response = api_charlie.post_json(f"/api/campaigns/{campaign.id}/retry/")
    assert response.status_code == 404
    assert Delivery.objects.filter(campaign=campaign, status=Delivery.Status.PENDING).count() == 0


def test_the_sender_sends_each_requeued_delivery_once_more(sim: ProviderSimulator, mixed: Any) -> None:
    campaign = mixed["campaign"]
    services.deliveries_retry_failed(campaign=campaign)

    sending.dispatch(campaign.pk, slice_seconds=5)

    assert len(sim.sends) == len(RETRIED) and not sim.duplicates()
    for name in RETRIED:
        delivery = Delivery.objects.get(pk=mixed[name].pk)
        assert delivery.status == Delivery.Status.SENT, name
        assert delivery.attempts == mixed[name].attempts + 1
    webhook_failed = Delivery.objects.get(pk=mixed["webhook_failed"].pk)
    assert webhook_failed.provider_message_id != "wamid.old"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED
    assert_counters_exact(campaign)


def test_the_page_button_retries_through_the_same_service(alice: Any, mixed: Any) -> None:
    from tests.dashboard.conftest import login

    campaign = mixed["campaign"]
    client = login("alice")
    assert f'hx-post="/campaigns/{campaign.id}/retry/"' in client.get(f"/campaigns/{campaign.id}/").content.decode()

    fragment = client.post(f"/campaigns/{campaign.id}/retry/", headers={"HX-Request": "true"}).content.decode()

    assert "data-notice" in fragment and f"{len(RETRIED)} " in fragment
    assert CampaignActivity.objects.get(campaign=campaign, kind="retry").user == alice
    assert_counters_exact(campaign)


def test_the_portable_path_moves_the_same_deliveries(mixed: Any) -> None:
    """The embedded mode's SQLite has no data-modifying CTE: its path gives the same result."""
    campaign = mixed["campaign"]
    retryable = Delivery.objects.filter(campaign=campaign).retryable(timezone.now()).values("pk")

    assert services._requeue_failed_portable(retryable, timezone.now()) == len(RETRIED)

    pending = set(Delivery.objects.filter(campaign=campaign, status="pending").values_list("pk", flat=True))
    assert pending == {mixed[n].pk for n in RETRIED}
    retry = DeliveryEvent.objects.get(delivery=mixed["server_error"])
    assert (retry.event, retry.error_code, retry.error_message) == ("retry", "500", "error 500")


def test_a_campaign_cancelled_during_the_retry_keeps_its_failures(mixed: Any, monkeypatch: Any) -> None:
    from sense.errors import Conflict

    campaign = mixed["campaign"]
    requeue = services._requeue_failed

    def cancelled_meanwhile(campaign: Campaign, now: Any) -> int:
        moved = requeue(campaign, now)
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.CANCELLED)
        return moved

    monkeypatch.setattr(services, "_requeue_failed", cancelled_meanwhile)

    with pytest.raises(Conflict):
        services.deliveries_retry_failed(campaign=campaign)

    assert not Delivery.objects.filter(campaign=campaign, status=Delivery.Status.PENDING).exists()
    assert not DeliveryEvent.objects.filter(delivery__campaign=campaign, event="retry").exists()
    assert_counters_exact(campaign)
