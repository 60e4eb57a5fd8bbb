"""Real `rundramatiq` processes: killed mid-batch (at most once), two of them sharing one
connection's rate limit, and one killed while taking an audience snapshot."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings

from campaigns import services
from campaigns.models import Campaign, Delivery
from tests.campaigns.conftest import queue_consumers, tcp_ports_of_group
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator

pytestmark = pytest.mark.slow


def _status(campaign: Campaign) -> str:
    campaign.refresh_from_db()
    return campaign.status


def test_a_worker_killed_mid_batch_never_causes_a_second_send(
    worker_processes: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    make_contacts(150)
    sim.latency = 0.05  # sends are in flight most of the time: the kill lands between call and record
    first = worker_processes()
    wait_for(lambda: queue_consumers(settings.CAMPAIGN_QUEUE) >= 1, timeout=30, what="worker consuming")
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    wait_for(lambda: len(sim.sends) >= 20, timeout=30, what="sends under way")

    first.stop(signal.SIGKILL)  # returns once its database sessions are gone: what it committed is final
    in_flight = Delivery.objects.filter(campaign=campaign, status=Delivery.Status.SENDING).count()
    sent_before = len(sim.sends)
    assert in_flight >= 1  # claimed, maybe sent, never recorded
    moved = services.deliveries_sweep_stale(older_than=timedelta(0))
    assert moved == in_flight
    unknown = set(
        Delivery.objects.filter(campaign=campaign, status=Delivery.Status.UNKNOWN).values_list("phone", flat=True)
    )

    # RabbitMQ redelivers the killed worker's unacknowledged messages to the next worker.
    worker_processes()
    wait_for(lambda: _status(campaign) == Campaign.Status.FINISHED, timeout=60, what="campaign finished")

    counts = sim.count_by_number()
    assert max(counts.values()) == 1, sim.duplicates()
    assert len(sim.sends) > sent_before
    by_status = {s: Delivery.objects.filter(campaign=campaign, status=s).count() for s in Delivery.Status.values}
    assert by_status["sent"] + by_status["unknown"] == 150
    assert by_status["unknown"] == len(unknown) == in_flight
    # Every recorded send matches one the provider got; unknown ones were never re-sent.
    recorded = set(
        Delivery.objects.filter(campaign=campaign, status=Delivery.Status.SENT).values_list(
            "provider_message_id", flat=True
        )
    )
    assert recorded <= {r["message_id"] for r in sim.sends}
    assert len(sim.sends) == by_status["sent"] + len({p.lstrip("+") for p in unknown} & set(counts))
    assert campaign.stat_unknown == in_flight and campaign.stat_sent == by_status["sent"]


def test_two_worker_processes_share_the_connections_rate_limit(
    worker_processes: Any, sim: ProviderSimulator, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    # 10 sends per 2-second window instead of per minute, to be quick. The slack (the limiter
    # counts 3 s windows) covers the time from a grant to the send reaching the provider: a
    # claim transaction and an HTTP call, which can take more than 0.3 s on a loaded machine.
    window, limit = 2.0, 10
    env = {"CAMPAIGN_RATE_WINDOW": str(window), "CAMPAIGN_RATE_SLACK": "1.0", "CAMPAIGN_SENDERS": "4"}
    workers = [worker_processes(**env), worker_processes(**env)]
    wait_for(lambda: queue_consumers(settings.CAMPAIGN_QUEUE) >= 2, timeout=30, what="two workers consuming")
    evolution.rate_per_minute = limit
    evolution.save()
    make_contacts(45)
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)

    ports: dict[int, set[int]] = {0: set(), 1: set()}

    def finished() -> bool:
        for i, worker in enumerate(workers):
            ports[i] |= tcp_ports_of_group(worker.proc.pid)
        return _status(campaign) == Campaign.Status.FINISHED

    wait_for(finished, timeout=60, interval=0.2, what="campaign finished")
    times = sim.send_times()
    assert len(times) == 45 and max(sim.count_by_number().values()) == 1
    # No window of that length ever held more than the limit, measured where the provider is.
    assert sim.max_in_window(times, window) <= limit
    # Both processes sent (the limit really was shared across them).
    senders = {r["client_port"] for r in sim.sends}
    assert senders & ports[0] and senders & ports[1]
    # And the limit was used, not just respected: 45 sends need at least 4 windows.
    assert times[-1] - times[0] >= 4 * window


def test_a_worker_killed_while_preparing_is_replaced_by_the_sweeper_without_duplicates(
    worker_processes: Any, settings: Any, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    total = 30_000
    make_contacts(total)
    env = {"CAMPAIGN_PREPARE_CHUNK": "100", "CAMPAIGN_PREPARE_STALE_SECONDS": "2"}
    settings.CAMPAIGN_PREPARE_STALE_SECONDS = 2
    first = worker_processes(**env)
    wait_for(lambda: queue_consumers(settings.CAMPAIGN_QUEUE) >= 1, timeout=30, what="worker consuming")
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    services.campaign_pause(campaign=campaign)  # nothing is sent: the snapshot alone is under test
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).stat_total >= 1000, timeout=60, what="snapshot under way")

    first.stop(signal.SIGKILL)  # mid-chunk, holding the snapshot, without releasing it
    campaign.refresh_from_db()
    assert 0 < campaign.stat_total < total and campaign.prepare_owner is not None
    assert services.campaigns_kick_stalled_preparations() == []  # its heartbeat is still fresh
    wait_for(
        lambda: services.campaigns_kick_stalled_preparations() == [campaign.pk], timeout=10, what="heartbeat stale"
    )

    worker_processes(**env)  # takes the sweeper's message (and RabbitMQ's redelivery: one claims)
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).prepared_at is not None, timeout=120, what="prepared")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    contacts = list(Delivery.objects.filter(campaign=campaign).values_list("contact_id", flat=True))
    assert len(contacts) == len(set(contacts)) == total
    assert campaign.stat_total == campaign.stat_pending == campaign.audience_count == total
    assert services.campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []


def test_two_worker_processes_keep_three_connections_daily_limits_and_intervals(
    worker_processes: Any, sim: ProviderSimulator, acme: Any, make_contacts: Any
) -> None:
    from collections import Counter

    from campaigns.models import Connection

    workers = [worker_processes(CAMPAIGN_SENDERS="4"), worker_processes(CAMPAIGN_SENDERS="4")]
    wait_for(lambda: queue_consumers(settings.CAMPAIGN_QUEUE) >= 2, timeout=30, what="two workers consuming")
    connections = [
        Connection.objects.create(
            tenant=acme,
            name=f"Number {i}",
            provider=Connection.Provider.EVOLUTION,
            base_url=sim.base_url,
            credentials={"instance": f"n{i}", "api_key": "k"},
            rate_per_minute=0,
            daily_limit=4,
        )
        for i in (1, 2, 3)
    ]
    make_contacts(20)
    campaign = services.campaign_create(
        tenant=acme,
        name="Two workers",
        message="Hi {{name}}",
        connection_ids=[c.pk for c in connections],
        interval_min_seconds=1,
        interval_max_seconds=2,
    )
    services.campaign_start(campaign=campaign)

    ports: dict[int, set[int]] = {0: set(), 1: set()}

    def capped() -> bool:
        for i, worker in enumerate(workers):
            ports[i] |= tcp_ports_of_group(worker.proc.pid)
        campaign.refresh_from_db()
        return campaign.waiting_reason == "daily_limit"

    wait_for(capped, timeout=90, interval=0.2, what="every connection at its daily limit")
    # The cap counts claimed sends: the last one claimed may still be on its way to the gateway.
    wait_for(lambda: len(sim.sends) >= 12, timeout=15, what="the claimed sends at the gateway")
    time.sleep(0.5)  # and nothing beyond the limits follows
    assert Counter(r["instance"] for r in sim.sends) == {"n1": 4, "n2": 4, "n3": 4}
    assert max(sim.count_by_number().values()) == 1
    for instance in ("n1", "n2", "n3"):
        times = sorted(r["at"] for r in sim.sends if r["instance"] == instance)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 1.0, (instance, gaps)
    assert campaign.stat_sent == 12 and campaign.stat_pending == 8 and campaign.status == "running"
    senders = {r["client_port"] for r in sim.sends}
    assert senders & ports[0] and senders & ports[1]  # both processes sent
    assert services.campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []
