"""Scheduled campaigns start by themselves when due (the `@periodic` job), on a real worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from campaigns import services, tasks
from campaigns.models import Campaign
from sense import scheduler
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator


def test_a_due_campaign_starts_and_sends(
    dramatiq_worker: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(5)
    campaign = make_campaign(evolution, scheduled_at=timezone.now() + timedelta(minutes=5))
    services.campaign_start(campaign=campaign)
    assert campaign.status == Campaign.Status.SCHEDULED

    tasks.start_due_campaigns()  # not due yet
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED

    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at=timezone.now() - timedelta(seconds=1))
    tasks.start_due_campaigns()
    campaign.refresh_from_db()
    assert campaign.status in (Campaign.Status.PREPARING, Campaign.Status.RUNNING, Campaign.Status.FINISHED)
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.FINISHED, timeout=30)
    assert len(sim.sends) == 5


def test_the_due_check_runs_every_few_seconds_in_each_worker() -> None:
    jobs = {job.name: job for job in scheduler.jobs()}
    job = jobs["campaigns.tasks.start_due_campaigns"]
    assert job.seconds <= 5
    assert "campaigns.tasks.sweep_stale_deliveries" in jobs
    assert "campaigns.tasks.kick_stalled_campaigns" in jobs


def test_a_stalled_running_campaign_gets_its_senders_back(
    dramatiq_worker: Any,
    monkeypatch: Any,
    sim: ProviderSimulator,
    evolution: Any,
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    make_contacts(3)
    campaign = make_campaign(evolution)
    with monkeypatch.context() as m:  # the broker "loses" the sender messages
        m.setattr(services, "_enqueue_senders", lambda campaign_id: None)
        services.campaign_start(campaign=campaign)
        wait_for(lambda: Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.RUNNING, timeout=30)
    assert services.campaigns_kick_stalled() == []  # its senders were enqueued just now
    # A minute later no sender has shown up.
    Campaign.objects.filter(pk=campaign.pk).update(dispatch_seen_at=timezone.now() - timedelta(minutes=2))
    assert services.campaigns_kick_stalled() == [campaign.pk]
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.FINISHED, timeout=30)
    assert len(sim.sends) == 3
    assert services.campaigns_kick_stalled() == []
