"""Safe sending on the full stack (a real worker on RabbitMQ, the simulator over real HTTP,
real time kept short): random gaps per connection, rotation, daily caps, the send window,
connection health and variants."""

from __future__ import annotations

import time
import zoneinfo
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from campaigns import pacing, services, tracking
from campaigns.models import Campaign, CampaignActivity, Connection, ConnectionDay, Delivery
from sense.models import Tenant
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator
from tests.workers import join


def _refresh(campaign: Campaign) -> Campaign:
    campaign.refresh_from_db()
    return campaign


@pytest.fixture
def numbers(acme: Tenant, sim: ProviderSimulator) -> Callable[..., list[Connection]]:
    """N Evolution connections on the simulator, instances n1..nN."""

    def make(n: int, **fields: Any) -> list[Connection]:
        fields.setdefault("rate_per_minute", 0)
        return [
            Connection.objects.create(
                tenant=acme,
                name=f"Number {i}",
                provider=Connection.Provider.EVOLUTION,
                base_url=sim.base_url,
                credentials={"instance": f"n{i}", "api_key": "evo-secret-key"},
                **fields,
            )
            for i in range(1, n + 1)
        ]

    return make


def _campaign(tenant: Tenant, connections: list[Connection], **fields: Any) -> Campaign:
    fields.setdefault("message", "Hi {{name}}")
    return services.campaign_create(tenant=tenant, name="Safe", connection_ids=[c.pk for c in connections], **fields)


def _gaps(sim: ProviderSimulator, instance: str) -> list[float]:
    times = sorted(r["at"] for r in sim.sends if r["instance"] == instance)
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _kinds(campaign: Campaign) -> list[str]:
    """The sending engine's activity lines of CAMPAIGN, oldest first (lifecycle lines left out)."""
    lifecycle = {"created", "edited", "started", "finished"}
    kinds = CampaignActivity.objects.filter(campaign=campaign).order_by("at", "pk").values_list("kind", flat=True)
    return [kind for kind in kinds if kind not in lifecycle]


def test_sends_from_one_connection_keep_a_random_gap_of_at_least_the_minimum(
    dramatiq_worker: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(6)
    (number,) = numbers(1)
    campaign = _campaign(acme, [number], interval_min_seconds=1, interval_max_seconds=2, typing_seconds=2)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=60, what="campaign finished")
    assert len(sim.sends) == 6 and max(sim.count_by_number().values()) == 1
    gaps = _gaps(sim, "n1")
    assert min(gaps) >= 1.0, gaps
    assert max(gaps) - min(gaps) > 0.01, gaps  # random, not a fixed pace
    assert max(gaps) < 2.0 + 1.5  # and the maximum is used as the upper bound (plus a loaded machine's delay)
    assert {r["delay"] for r in sim.sends} == {2000}  # typing: Evolution's delay, in ms
    assert set(Delivery.objects.filter(campaign=campaign).values_list("connection_id", flat=True)) == {number.pk}


def test_a_break_follows_every_n_sends_of_a_connection(
    dramatiq_worker: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(5)
    (number,) = numbers(1)
    campaign = _campaign(acme, [number], interval_min_seconds=0, interval_max_seconds=0, pause_every=2, pause_seconds=2)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=60, what="campaign finished")
    gaps = _gaps(sim, "n1")
    assert len(gaps) == 4
    assert gaps[1] >= 2.0 and gaps[3] >= 2.0, gaps  # after the 2nd and the 4th send
    assert gaps[0] < 1.5 and gaps[2] < 1.5, gaps


def test_round_robin_spreads_sends_evenly_over_the_connections(
    dramatiq_worker: Any, settings: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    settings.CAMPAIGN_CLAIM_BATCH = 1
    make_contacts(30)
    connections = numbers(3)
    campaign = _campaign(acme, connections, rotation="round_robin")
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=60, what="campaign finished")
    join(dramatiq_worker)
    by_instance = Counter(r["instance"] for r in sim.sends)
    assert sum(by_instance.values()) == 30 and set(by_instance) == {"n1", "n2", "n3"}
    assert max(by_instance.values()) - min(by_instance.values()) <= 2, by_instance
    # Each delivery records the connection it went out on; the day counters count them.
    recorded = Counter(Delivery.objects.filter(campaign=campaign).values_list("connection__name", flat=True))
    assert recorded == Counter({f"Number {i[1]}": n for i, n in by_instance.items()})
    assert pacing.sent_today(c.pk for c in connections) == {
        c.pk: by_instance[c.credentials["instance"]] for c in connections
    }


def test_least_used_sends_first_on_the_connection_with_fewest_sends_today(
    dramatiq_worker: Any, settings: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    settings.CAMPAIGN_CLAIM_BATCH = 1
    settings.CAMPAIGN_SENDERS = 1
    make_contacts(9)
    one, two, three = numbers(3)
    for connection, sent in ((one, 6), (two, 3)):  # sends of other campaigns earlier today
        ConnectionDay.objects.create(tenant=acme, connection=connection, day=pacing.today(), sent=sent)
    campaign = _campaign(acme, [one, two, three], rotation="least_used")
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=60, what="campaign finished")
    assert Counter(r["instance"] for r in sim.sends) == {"n3": 6, "n2": 3}
    assert set(pacing.sent_today([one.pk, two.pk, three.pk]).values()) == {6}


def test_the_daily_limit_holds_and_the_campaign_waits_for_the_next_day(
    dramatiq_worker: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(10)
    one, two = numbers(2)
    one.daily_limit, two.daily_limit = 4, 3
    one.save()
    two.save()
    ConnectionDay.objects.create(tenant=acme, connection=two, day=pacing.today(), sent=1)  # another campaign's
    campaign = _campaign(acme, [one, two])
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).waiting_reason == "daily_limit", timeout=30, what="waiting for the limit")
    time.sleep(1)  # (not `join`: the senders wait in delayed messages until midnight)
    assert Counter(r["instance"] for r in sim.sends) == {"n1": 4, "n2": 2}
    assert pacing.sent_today([one.pk, two.pk]) == {one.pk: 4, two.pk: 3}
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING and campaign.stat_pending == 4
    assert campaign.next_send_at == pacing.next_day_start()
    local = campaign.next_send_at.astimezone(zoneinfo.ZoneInfo(django_settings.TIME_ZONE))
    assert (local.hour, local.minute) == (0, 0)
    assert _kinds(campaign).count("waiting") == 1
    assert _kinds(campaign).count("limit") == 2  # each connection's limit, reported once
    assert campaign.dispatch_seen_at is not None and campaign.dispatch_seen_at > timezone.now()  # no kick meanwhile


def _window_opening_in(seconds: float) -> tuple[dict[str, Any], datetime]:
    zone = zoneinfo.ZoneInfo(django_settings.TIME_ZONE)
    opens = (timezone.now() + timedelta(seconds=seconds)).astimezone(zone).replace(microsecond=0)
    if opens.hour == 23:
        pytest.skip("the window would cross midnight")
    end = opens + timedelta(minutes=30)
    window = {"days": [opens.isoweekday()], "start": f"{opens:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}
    return window, opens


def test_a_campaign_started_before_its_window_sends_nothing_until_it_opens_then_goes_on_by_itself(
    dramatiq_worker: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(5)
    window, opens = _window_opening_in(5)
    campaign = _campaign(acme, numbers(1), send_window=window)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).waiting_reason == "window", timeout=30, what="waiting for the window")
    assert campaign.next_send_at == opens
    assert campaign.status == Campaign.Status.RUNNING and not sim.sends
    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=40, what="sent after opening")
    assert len(sim.sends) == 5
    assert min(sim.send_times()) >= opens.timestamp()
    assert campaign.waiting_reason == "" and campaign.next_send_at is None
    kinds = _kinds(campaign)
    assert kinds.count("waiting") == 1 and kinds.count("continued") == 1


def _connection_update(client: Any, connection: Connection, state: str, at: datetime) -> None:
    body = {
        "event": "connection.update",
        "instance": connection.credentials["instance"],
        "data": {"instance": connection.credentials["instance"], "state": state, "statusReason": 401},
        "date_time": at.isoformat(),
    }
    response = client.post(
        f"/api/webhooks/evolution/{connection.webhook_token}/", body, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["status"] == "pending", response.content
    tracking.process_all_pending()


def test_a_closed_connection_is_skipped_and_the_campaign_waits_for_one_to_open(
    dramatiq_worker: Any, client: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(8)
    one, two = numbers(2)
    now = timezone.now()
    _connection_update(client, one, "close", now)
    one.refresh_from_db()
    assert (one.state, one.state_reason, one.state_since) == ("close", "401", now)
    campaign = _campaign(acme, [one, two], interval_min_seconds=1, interval_max_seconds=1)
    services.campaign_start(campaign=campaign)

    wait_for(lambda: len(sim.sends) >= 2, timeout=30, what="sends on the open connection")
    _connection_update(client, two, "close", now + timedelta(seconds=1))
    wait_for(lambda: _refresh(campaign).waiting_reason == "connection", timeout=30, what="waiting for a connection")
    time.sleep(2)  # a send already under way when the report came is recorded
    sent = len(sim.sends)
    assert {r["instance"] for r in sim.sends} == {"n2"} and 2 <= sent < 8
    assert campaign.next_send_at is None and "connection" in _kinds(campaign)

    _connection_update(client, one, "connecting", now + timedelta(seconds=2))
    _connection_update(client, one, "close", now - timedelta(seconds=5))  # an old report: ignored
    _connection_update(client, one, "open", now + timedelta(seconds=3))
    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=40, what="finished on open")
    assert len(sim.sends) == 8 and {r["instance"] for r in sim.sends[sent:]} == {"n1"}
    one.refresh_from_db()
    assert one.state == "open"
    kinds = _kinds(campaign)
    assert kinds.count("waiting") == 1 and kinds.count("continued") == 1
    assert kinds.count("connection") == 3  # two closed, then connecting and open of the first


def test_variants_rotate_and_each_delivery_records_its_own(
    dramatiq_worker: Any, sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(9)
    campaign = _campaign(acme, numbers(1), message="A {{name}}", variants=["B {{name}}", "C {{name}}"])
    services.campaign_start(campaign=campaign)

    wait_for(lambda: _refresh(campaign).status == Campaign.Status.FINISHED, timeout=30, what="campaign finished")
    by_variant = Counter(Delivery.objects.filter(campaign=campaign).values_list("variant", flat=True))
    assert by_variant == {0: 3, 1: 3, 2: 3}
    texts = {r["number"]: r["text"] for r in sim.sends}
    for delivery in Delivery.objects.filter(campaign=campaign).select_related("contact"):
        letter = "ABC"[delivery.variant or 0]
        assert texts[delivery.phone.lstrip("+")] == f"{letter} {delivery.contact.name}"  # type: ignore[union-attr]


def test_live_frames_say_why_a_campaign_waits_and_until_when(
    monkeypatch: Any, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    from campaigns import live
    from sense import realtime

    frames: list[dict[str, Any]] = []
    monkeypatch.setattr(realtime, "broadcast", lambda tenant_id, frame: frames.append(frame))
    campaign = _campaign(acme, numbers(1))
    until = timezone.now() + timedelta(hours=3)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    pacing.campaign_wait(campaign, Campaign.Waiting.WINDOW, until)
    pacing.campaign_wait(campaign, Campaign.Waiting.WINDOW, until)  # the same wait: no second line
    live._publish_stats({campaign.pk})
    assert frames[-1]["waiting_reason"] == "window" and frames[-1]["next_send_at"] == until.isoformat()
    assert pacing.campaign_continue(campaign) and not pacing.campaign_continue(campaign)
    live._publish_stats({campaign.pk})
    assert frames[-1]["waiting_reason"] is None and frames[-1]["next_send_at"] is None
    assert _kinds(campaign) == ["waiting", "continued"]


def test_status_webhooks_from_any_of_the_campaigns_connections_update_its_deliveries(
    client: Any, acme: Tenant, numbers: Any, make_contacts: Any
) -> None:
    make_contacts(2)
    one, two = numbers(2)
    campaign = _campaign(acme, [one, two])
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    first, second = Delivery.objects.filter(campaign=campaign).order_by("pk")
    for delivery, connection, message_id in ((first, one, "WA-1"), (second, two, "WA-2")):
        Delivery.move(
            delivery.pk,
            from_status="pending",
            to_status="sent",
            connection=connection,
            provider_message_id=message_id,
            sent_at=timezone.now(),
        )
        record = {"instance": connection.credentials["instance"], "message_id": message_id, "number": delivery.phone}
        body = ProviderSimulator.evolution_status(record, "DELIVERY_ACK")
        url = f"/api/webhooks/evolution/{connection.webhook_token}/"
        assert client.post(url, body, content_type="application/json").status_code == 200
    tracking.process_all_pending()
    assert set(Delivery.objects.filter(campaign=campaign).values_list("status", flat=True)) == {"delivered"}
    assert _refresh(campaign).stat_delivered == 2


def test_rotating_over_three_connections_costs_no_more_queries_per_message_than_one(
    sim: ProviderSimulator, acme: Tenant, numbers: Any, make_contacts: Any, monkeypatch: Any
) -> None:
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from campaigns import sending

    monkeypatch.setattr(sending, "STATE_REFRESH_SECONDS", 3600.0)  # timing apart, the same work
    monkeypatch.setattr(sending, "HEARTBEAT_SECONDS", 3600.0)
    connections = numbers(3)
    counts = []
    for start, used in ((0, connections[:1]), (40, connections)):
        make_contacts(40, start=start, tags=[f"batch{start}"])
        campaign = _campaign(acme, used, tags=[f"batch{start}"])
        services.campaign_start(campaign=campaign)
        services.campaign_prepare(campaign_id=campaign.pk)
        with CaptureQueriesContext(db) as queries:
            sending.dispatch(campaign.pk)
        assert _refresh(campaign).status == Campaign.Status.FINISHED
        counts.append(len(queries))
    assert len(sim.sends) == 80 and {r["instance"] for r in sim.sends[40:]} == {"n1", "n2", "n3"}
    assert counts[1] <= counts[0] + 2, counts  # the same queries per batch; the run's set-up reads its connections
