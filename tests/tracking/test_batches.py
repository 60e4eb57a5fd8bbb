"""Workers apply pending events in batches: one transaction, one counter UPDATE per campaign,
a bad event failed alone, concurrent workers splitting the work; and the webhook views wake
the workers with a few coalesced messages rather than one per event."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import dramatiq
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from campaigns import tracking, webhook_views
from campaigns.models import Campaign, Connection, DeliveryEvent, WebhookEvent
from sense.lib import bulk
from sense.lib.broker import RabbitmqBroker
from tests.helpers import at_once, wait_for
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries, post_evolution, recount, stats
from tests.webhook_payloads import evolution_update
from tests.workers import flush_queues


def post(connection_: Connection, payload: Any) -> Any:
    response = post_evolution(connection_, payload)
    assert response.status_code == 200, response.content
    return response


def test_a_batch_applies_every_event_with_one_counter_update_per_campaign(
    evolution_connection: Connection, deliveries: Any
) -> None:
    first, second = make_campaign(evolution_connection, "first"), make_campaign(evolution_connection, "second")
    rows = deliveries(first, 6) + deliveries(second, 4)
    for delivery in rows:
        for status in ("DELIVERY_ACK", "READ", "READ"):  # a duplicate, and two steps for one delivery
            post(evolution_connection, evolution_update(delivery.provider_message_id, status))

    with CaptureQueriesContext(connection) as queries:
        assert tracking.process_pending(limit=100) == 30
    campaign_updates = [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "campaigns_campaign"')]
    assert len(campaign_updates) == 2
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    for campaign, count in ((first, 6), (second, 4)):
        assert stats(campaign)["read"] == count and stats(campaign) == recount(campaign)
    assert DeliveryEvent.objects.count() == 30  # every event is in the history
    assert tracking.process_pending() == 0


def test_a_batch_updates_its_deliveries_with_one_statement_per_kind_of_change(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    rows = deliveries(campaign, 12)
    for delivery in rows[:8]:
        post(evolution_connection, evolution_update(delivery.provider_message_id, "DELIVERY_ACK"))
    for delivery in rows[8:]:
        post(evolution_connection, evolution_update(delivery.provider_message_id, "READ"))

    with CaptureQueriesContext(connection) as queries:
        assert tracking.process_pending(limit=100) == 12
    delivery_updates = [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "campaigns_delivery"')]
    assert len(delivery_updates) <= 2  # delivered, read: not one per delivery
    assert stats(campaign)["delivered"] == 12 and stats(campaign)["read"] == 4
    assert stats(campaign) == recount(campaign)


def test_a_bad_event_fails_alone_and_the_rest_of_its_batch_applies(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    rows = deliveries(campaign, 5)
    ids = [post(evolution_connection, evolution_update(d.provider_message_id, "READ")).json()["id"] for d in rows]
    WebhookEvent.objects.filter(pk=ids[2]).update(body="{not json")  # stored, then unreadable

    assert tracking.process_pending() == 5

    assert WebhookEvent.objects.get(pk=ids[2]).status == "failed"
    assert WebhookEvent.objects.exclude(pk=ids[2]).filter(status="processed").count() == 4
    assert stats(campaign)["read"] == 4 and stats(campaign) == recount(campaign)


def test_concurrent_workers_split_the_pending_events_and_apply_each_once(transactional_db: Any, acme: Any) -> None:
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection_)
    rows = make_deliveries(campaign, 60)
    for delivery in rows:
        for status in ("DELIVERY_ACK", "READ"):
            post(connection_, evolution_update(delivery.provider_message_id, status))
    claimed = at_once(lambda: tracking.process_all_pending(limit=7), threads=3)

    assert sum(claimed) == 120  # each event claimed by exactly one of them
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert DeliveryEvent.objects.count() == 120
    assert stats(campaign)["read"] == 60 and stats(campaign) == recount(campaign)


@pytest.mark.django_db(transaction=True)
def test_a_storm_of_webhooks_wakes_the_workers_with_a_few_messages(acme: Any, monkeypatch: Any) -> None:
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection_)
    rows = make_deliveries(campaign, 40)
    monkeypatch.setattr(webhook_views._wakeups, "interval", 0.5)
    flush_queues()
    broker = dramatiq.get_broker()
    assert isinstance(broker, RabbitmqBroker)  # the full stack's broker
    started = time.monotonic()
    try:
        for delivery in rows:
            post(connection_, evolution_update(delivery.provider_message_id, "READ"))
        elapsed = time.monotonic() - started
        # One message at once, then at most one per interval (and the trailing one).
        wait_for(lambda: broker.get_queue_message_counts("webhooks")[0] >= 1, what="a wake-up")
        time.sleep(0.6)
        messages = broker.get_queue_message_counts("webhooks")[0]
        assert 1 <= messages <= 2 + int(elapsed / 0.5)
        assert messages < len(rows)

        # One woken worker applies all of them.
        tracking.process_all_pending()
        assert stats(campaign)["read"] == 40
    finally:
        flush_queues()


def test_after_an_outage_the_sweeper_catches_up_in_batches(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    rows = deliveries(campaign, 225)
    for delivery in rows:
        for status in ("DELIVERY_ACK", "READ"):
            post(evolution_connection, evolution_update(delivery.provider_message_id, status))

    # Nothing stale yet: the workers' job. (The grace is an hour: posting 450 webhooks took over
    # a minute on a loaded machine, which made a 60 s grace see them as stale.)
    assert tracking.sweep(grace=3600).events == 0
    with CaptureQueriesContext(connection) as queries:
        assert tracking.sweep(grace=0, limit=1000).events == 450
    campaign_updates = [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "campaigns_campaign"')]
    assert len(campaign_updates) == 3  # batches of 200, 200 and 50
    assert stats(campaign)["read"] == 225 and stats(campaign) == recount(campaign)
    assert tracking.sweep(grace=0).events == 0


def test_a_database_error_on_one_event_counts_its_attempts_instead_of_failing_the_batch_forever(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, monkeypatch: Any, settings: Any
) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    rows = deliveries(campaign, 4)
    ids = [post(evolution_connection, evolution_update(d.provider_message_id, "READ")).json()["id"] for d in rows]
    original = tracking.apply_updates

    def breaks_on_the_first_event(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("webhook_event_id") == ids[0]:
            raise OperationalError("delivery changed under a lock")
        return original(*args, **kwargs)

    monkeypatch.setattr(tracking, "apply_updates", breaks_on_the_first_event)
    for _ in range(4):  # the actor's retries
        with contextlib.suppress(OperationalError):
            tracking.process_pending()

    bad = WebhookEvent.objects.get(pk=ids[0])
    assert (bad.status, bad.attempts) == ("failed", 2)  # visible, no longer retried
    assert WebhookEvent.objects.filter(pk__in=ids[1:], status="processed").count() == 3
    assert stats(campaign)["read"] == 3 and stats(campaign) == recount(campaign)


@pytest.mark.parametrize("writer", ["_move_rows_unnest", "_move_rows_orm"])
def test_both_ways_of_writing_a_batch_write_the_same_rows(
    campaign: Campaign, deliveries: Any, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes a batch's moves with unnest, other databases with CASE WHEN: the same
    values land, NULLs and booleans included, and a row moved meanwhile fails the whole write."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from campaigns.models import Delivery

    if writer == "_move_rows_orm":  # what SQLite (the embedded default) runs
        monkeypatch.setattr(
            Delivery, "_move_rows_unnest", lambda db, rows, shape, now: Delivery._move_rows_orm(rows, shape, now)
        )
    rows = deliveries(campaign, 3)
    at = timezone.now() - timedelta(minutes=5)
    moves = [
        (
            rows[0].pk,
            campaign.pk,
            "sent",
            "failed",
            {"failed_at": at, "error_code": "131026", "error_message": 'l\'été "x"', "billable": None},
        ),
        (
            rows[1].pk,
            campaign.pk,
            "sent",
            "failed",
            {"failed_at": at, "error_code": "", "error_message": "", "billable": False},
        ),
        (
            rows[2].pk,
            campaign.pk,
            "sent",
            "delivered",
            {"delivered_at": at, "billable": True, "pricing_category": "marketing"},
        ),
    ]
    with transaction.atomic():
        Delivery.move_locked(moves)

    got = {d.pk: d for d in Delivery.objects.filter(pk__in=[r.pk for r in rows])}
    assert (got[rows[0].pk].status, got[rows[0].pk].error_code, got[rows[0].pk].error_message) == (
        "failed",
        "131026",
        'l\'été "x"',
    )
    assert got[rows[0].pk].failed_at == at and got[rows[0].pk].billable is None
    assert got[rows[1].pk].billable is False and got[rows[1].pk].error_code == ""
    assert (got[rows[2].pk].status, got[rows[2].pk].delivered_at, got[rows[2].pk].billable) == ("delivered", at, True)
    assert got[rows[2].pk].pricing_category == "marketing"
    assert stats(campaign) == recount(campaign)

    # A delivery no longer in its from status: the write raises and its transaction undoes it all.
    stale = [
        (rows[1].pk, campaign.pk, "failed", "sent", {"error_code": "x"}),
        (rows[2].pk, campaign.pk, "sent", "read", {"error_code": "y"}),  # it is delivered now
    ]
    with pytest.raises(OperationalError), transaction.atomic():
        Delivery.move_locked(stale)
    assert Delivery.objects.get(pk=rows[1].pk).error_code == "" and stats(campaign) == recount(campaign)


@pytest.mark.django_db(transaction=True)
def test_concurrent_webhooks_share_inserts_and_each_raw_body_is_stored_byte_for_byte(
    acme: Any, monkeypatch: Any
) -> None:
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    inserts: list[int] = []
    write = webhook_views._events.write

    def counting(events: list[WebhookEvent]) -> None:
        inserts.append(len(events))
        time.sleep(0.05)  # hold the writers so that later requests gather into a batch
        write(events)

    monkeypatch.setattr(webhook_views._events, "write", counting)
    # What the server-side bound INSERT must not mangle: quotes, backslashes, placeholders
    # of both styles, a percent sign, an escaped NUL and text outside the BMP.
    tricky = 'O\'Brien \\"quoted\\" %s %(x)s $1 100% \\u0000 \\ud83d\\ude00 ação 😀 \\\\ \\n'
    bodies = [
        '{"event": "contacts.update",\r\n\t"instance": "acme-main", "data": [{"pushName": "' + f'{tricky} {n}"' + "}]}"
        for n in range(12)
    ]
    counter = iter(range(len(bodies)))

    def send() -> int:
        body = bodies[next(counter)]
        return int(post_evolution(connection_, body).status_code)

    assert at_once(send, threads=len(bodies)) == [200] * len(bodies)
    assert sum(inserts) == len(bodies) and len(inserts) < len(bodies)  # rows shared INSERTs
    stored = set(WebhookEvent.objects.values_list("body", flat=True))
    assert stored == set(bodies)
    assert WebhookEvent.objects.filter(tenant=acme, connection=connection_, status="ignored").count() == len(bodies)


@pytest.mark.parametrize("path", ["bound", "orm"])
def test_the_event_insert_writes_exactly_what_the_orm_would(acme: Any, path: str, monkeypatch: Any) -> None:
    """PostgreSQL writes a batch of webhook events as one JSON parameter (sense.lib.bulk),
    other databases through the ORM: every column lands as given (microseconds, NULLs, text
    outside the BMP), the ids come back in the batch's order, and an over-long value is
    refused, not cut short."""
    from datetime import timedelta

    from django.db import DataError, transaction
    from django.db import connection as db
    from django.utils import timezone

    if path == "bound" and db.vendor != "postgresql":
        pytest.skip("PostgreSQL's INSERT")
    if path == "orm":
        monkeypatch.setattr(db, "vendor", "sqlite")  # what the embedded default runs
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    at = timezone.now().replace(microsecond=123456) - timedelta(days=1)
    events = [
        WebhookEvent(
            tenant_id=acme.pk,
            connection_id=connection_.pk,
            provider="evolution",
            event_type=f"messages.update.{n}",
            body='{"a": "l\'été \\"x\\" 😀 \\u0000", "n": ' + f"{n}}}",
            status="ignored" if n % 2 else "pending",
            error="" if n % 2 else "was: 😀",
            attempts=n,
            received_at=at + timedelta(microseconds=n),
            processed_at=at if n % 2 else None,
        )
        for n in range(5)
    ]
    bulk.insert(events)

    assert [e.pk for e in events] == sorted(e.pk for e in events) and all(not e._state.adding for e in events)
    fields = [f.attname for f in bulk._fields(WebhookEvent)]
    for event in events:
        stored = WebhookEvent.objects.get(pk=event.pk)
        assert {f: getattr(stored, f) for f in fields} == {f: getattr(event, f) for f in fields}
    too_long = WebhookEvent(
        tenant_id=acme.pk, connection_id=connection_.pk, provider="evolution", event_type="x" * 65, body="{}"
    )
    with pytest.raises(DataError), transaction.atomic():
        bulk.insert([too_long])
    assert WebhookEvent.objects.count() == len(events)
