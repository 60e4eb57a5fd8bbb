"""Sending on the full stack: a real worker on RabbitMQ, the simulator over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns import services
from campaigns.models import Campaign, Delivery
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator
from tests.workers import join


def _refresh(campaign: Campaign) -> Campaign:
    campaign.refresh_from_db()
    return campaign


def test_it_sends_every_delivery_once_and_records_the_provider_ids(
    dramatiq_worker: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(30)
    campaign = make_campaign(evolution, message="Hi {{name}}, your number is {{phone}}{{missing}}")
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    join(dramatiq_worker)
    assert len(sim.sends) == 30
    assert max(sim.count_by_number().values()) == 1
    sent = {d.provider_message_id: d for d in Delivery.objects.filter(campaign=campaign)}
    assert set(sent) == {record["message_id"] for record in sim.sends}
    assert all(d.status == Delivery.Status.SENT and d.sent_at for d in sent.values())
    record = sim.sends[0]
    assert record["text"] == f"Hi Contact {int(record['number'][-8:]) - 10000000}, your number is +{record['number']}"
    assert record["instance"] == "acme-1" and record["headers"]["apikey"] == "evo-secret-key"
    assert campaign.stats == {
        "total": 30,
        "pending": 0,
        "sent": 30,
        "delivered": 0,
        "read": 0,
        "failed": 0,
        "cancelled": 0,
        "unknown": 0,
        "replied": 0,
    }
    assert campaign.finished_at is not None


def test_it_sends_through_the_cloud_api(
    dramatiq_worker: Any, sim: ProviderSimulator, cloud: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(5)
    campaign = make_campaign(cloud)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    assert len(sim.sends) == 5
    assert {r["phone_number_id"] for r in sim.sends} == {"1234567890"}
    assert sim.sends[0]["headers"]["authorization"] == "Bearer cloud-secret-token"
    assert campaign.stat_sent == 5


def test_a_permanent_error_fails_the_delivery_with_the_providers_code(
    dramatiq_worker: Any, sim: ProviderSimulator, cloud: Any, make_contacts: Any, make_campaign: Any
) -> None:
    contacts = make_contacts(4)
    sim.fail_number(contacts[1].phone, 400)
    campaign = make_campaign(cloud)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    failed = Delivery.objects.get(campaign=campaign, status=Delivery.Status.FAILED)
    assert failed.phone == contacts[1].phone
    assert failed.error_code == "131026"
    assert "Message undeliverable" in failed.error_message
    assert failed.failed_at is not None and failed.attempts == 1
    assert (campaign.stat_sent, campaign.stat_failed) == (3, 1)


def test_a_rate_limited_send_is_retried_after_retry_after_and_sent_once(
    dramatiq_worker: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(3)
    sim.fail_next(429, count=2, retry_after=0.2)
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    assert sorted(sim.count_by_number().values()) == [1, 1, 1]
    assert len([r for r in sim.requests if r["status"] == 429]) == 2
    assert campaign.stat_sent == 3
    retried = Delivery.objects.filter(campaign=campaign, attempts__gt=1)
    assert retried.exists()
    assert all(d.error_code == "" for d in retried)


def test_a_run_of_provider_errors_pauses_the_campaign_with_the_reason(
    dramatiq_worker: Any, settings: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    settings.CAMPAIGN_MAX_CONSECUTIVE_ERRORS = 3
    make_contacts(10)
    sim.fail_next(400, count=50)
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.PAUSED, timeout=30, what="auto-pause")
    join(dramatiq_worker)
    campaign.refresh_from_db()
    assert "3 provider errors in a row" in campaign.pause_reason
    assert "number is not on WhatsApp" in campaign.pause_reason
    assert campaign.stat_failed >= 3
    assert campaign.stat_pending == 10 - campaign.stat_failed
    assert not sim.sends

    sim.reset()
    services.campaign_resume(campaign=campaign)
    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="finished after resume")
    assert campaign.pause_reason == ""
    assert campaign.stat_sent == 10 - campaign.stat_failed


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_pause_and_cancel_stop_new_sends_at_once(
    action: str,
    dramatiq_worker: Any,
    settings: Any,
    sim: ProviderSimulator,
    evolution: Any,
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    make_contacts(200)
    sim.latency = 0.02
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    wait_for(lambda: len(sim.sends) >= 10, timeout=30, what="first sends")

    getattr(services, f"campaign_{action}")(campaign=_refresh(campaign))
    at_stop = len(sim.sends)
    join(dramatiq_worker)
    # Only sends already in flight (one per sender thread) may land after the stop.
    assert len(sim.sends) - at_stop <= settings.CAMPAIGN_SENDERS * settings.CAMPAIGN_CLAIM_BATCH
    assert len(sim.sends) < 200
    campaign.refresh_from_db()
    counts = {s: Delivery.objects.filter(campaign=campaign, status=s).count() for s in Delivery.Status.values}
    assert counts["sending"] == 0
    assert counts["sent"] == len(sim.sends)
    if action == "pause":
        assert campaign.status == Campaign.Status.PAUSED
        assert counts["pending"] == 200 - len(sim.sends)
        services.campaign_resume(campaign=campaign)
        wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=60, what="finished")
        assert len(sim.sends) == 200
        assert max(sim.count_by_number().values()) == 1
        assert campaign.stat_sent == 200
    else:
        assert campaign.status == Campaign.Status.CANCELLED
        assert counts["cancelled"] == 200 - len(sim.sends)
        assert campaign.stat_cancelled == counts["cancelled"]
        assert campaign.stat_pending == 0


def test_a_send_refused_with_131050_opts_the_contact_out(
    dramatiq_worker: Any, sim: ProviderSimulator, cloud: Any, make_contacts: Any, make_campaign: Any
) -> None:
    from tests.simulator import cloud_error_body

    contacts = make_contacts(3)
    body = cloud_error_body(400, "(#131050) Unable to deliver the message: the user stopped marketing messages", 131050)
    sim.fail_number(contacts[0].phone, 400, body=body)
    campaign = make_campaign(cloud)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    stopped = type(contacts[0]).objects.get(pk=contacts[0].pk)
    assert (stopped.opted_out, stopped.opt_out_source) == (True, "provider")
    assert [c.opted_out for c in type(contacts[0]).objects.filter(pk__in=[c.pk for c in contacts[1:]])] == [
        False,
        False,
    ]
