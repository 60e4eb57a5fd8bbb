"""`manage.py prune_webhooks` and its periodic job: raw bodies of processed and ignored events
go after WEBHOOK_RETENTION_DAYS; pending and failed ones, the delivery history and the
counters stay."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from campaigns import retention, tasks
from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, WebhookEvent
from sense import scheduler
from tests.conftest import ApiClient
from tests.tracking.conftest import post_evolution, process_all, recount, stats
from tests.webhook_payloads import evolution_message_item, evolution_update, evolution_upsert


def prune(*args: str) -> dict[str, int]:
    out = StringIO()
    call_command("prune_webhooks", "--json", *args, stdout=out)
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def age(events: Any, days: float) -> None:
    WebhookEvent.objects.filter(pk__in=[e.pk for e in events]).update(received_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def history(campaign: Campaign, evolution_connection: Connection, deliveries: Any) -> dict[str, Any]:
    """Two deliveries with applied status events (processed bodies), an ignored body, a
    pending one and a failed one, all 31 days old; and a processed body from today."""
    first, second = deliveries(campaign, 2)
    post_evolution(evolution_connection, evolution_update(first.provider_message_id, "DELIVERY_ACK"))
    post_evolution(evolution_connection, evolution_update(second.provider_message_id, "READ"))
    # Our own echo: stored as ignored.
    post_evolution(evolution_connection, evolution_upsert(evolution_message_item({"conversation": "Hi"}, from_me=True)))
    process_all()
    old = list(WebhookEvent.objects.all())
    assert sorted(e.status for e in old) == ["ignored", "processed", "processed"]
    post_evolution(evolution_connection, evolution_update(first.provider_message_id, "READ"))
    [pending] = WebhookEvent.objects.filter(status="pending")
    failed = WebhookEvent.objects.create(
        tenant=campaign.tenant,
        connection=evolution_connection,
        provider="evolution",
        event_type="messages.update",
        body="{not json",
        status=WebhookEvent.Status.FAILED,
    )
    age([*old, pending, failed], days=31)
    recent = WebhookEvent.objects.create(
        tenant=campaign.tenant,
        connection=evolution_connection,
        provider="evolution",
        event_type="messages.update",
        body="{}",
        status=WebhookEvent.Status.PROCESSED,
    )
    return {"campaign": campaign, "deliveries": [first, second], "pending": pending, "failed": failed, "recent": recent}


def test_it_deletes_old_processed_and_ignored_bodies_only(history: dict[str, Any]) -> None:
    assert prune() == {"deleted": 3, "kept_pending": 2}
    left = set(WebhookEvent.objects.values_list("pk", flat=True))
    assert left == {history["pending"].pk, history["failed"].pk, history["recent"].pk}


def test_the_delivery_history_and_the_counters_are_kept(history: dict[str, Any], api_alice: ApiClient) -> None:
    campaign = history["campaign"]
    before_stats = stats(campaign)
    events_before = list(DeliveryEvent.objects.order_by("pk").values_list("pk", "delivery_id", "status"))
    first, second = history["deliveries"]
    log_before = api_alice.get_json(f"/api/deliveries/{second.pk}/events/").json()

    prune()

    assert list(DeliveryEvent.objects.order_by("pk").values_list("pk", "delivery_id", "status")) == events_before
    assert not DeliveryEvent.objects.filter(webhook_event__isnull=False).exists()
    assert api_alice.get_json(f"/api/deliveries/{second.pk}/events/").json() == log_before
    assert log_before and log_before[-1]["status"] == "read"
    assert stats(campaign) == before_stats == recount(campaign)
    assert Delivery.objects.get(pk=second.pk).status == "read"


def test_a_pending_event_kept_is_still_applied_afterwards(history: dict[str, Any]) -> None:
    prune()
    process_all()
    first, _ = history["deliveries"]
    assert Delivery.objects.get(pk=first.pk).status == "read"
    assert stats(history["campaign"]) == recount(history["campaign"])


def test_a_dry_run_counts_and_deletes_nothing(history: dict[str, Any]) -> None:
    total = WebhookEvent.objects.count()
    assert prune("--dry-run") == {"deleted": 3, "kept_pending": 2}
    assert WebhookEvent.objects.count() == total


def test_days_moves_the_cutoff(history: dict[str, Any]) -> None:
    assert prune("--days", "60") == {"deleted": 0, "kept_pending": 0}
    assert WebhookEvent.objects.count() == 6


def test_small_batches_delete_everything_too(history: dict[str, Any]) -> None:
    assert retention.webhook_events_prune(batch_size=1).deleted == 3
    assert WebhookEvent.objects.filter(status__in=["processed", "ignored"]).count() == 1


def test_a_budget_stops_after_a_batch_and_the_next_run_goes_on(history: dict[str, Any]) -> None:
    assert retention.webhook_events_prune(batch_size=1, budget=0).deleted == 1
    assert retention.webhook_events_prune(batch_size=2).deleted == 2


def test_it_refuses_nonsense_options(db: Any) -> None:
    with pytest.raises(CommandError, match="--days"):
        prune("--days", "0")
    with pytest.raises(CommandError, match="--batch-size"):
        prune("--batch-size", "0")


def test_the_human_output_says_what_happened(history: dict[str, Any]) -> None:
    out = StringIO()
    call_command("prune_webhooks", "--dry-run", stdout=out)
    assert out.getvalue().strip() == (
        "3 processed or ignored webhook event(s) older than 30 day(s) would be deleted; 2 pending or failed kept."
    )


def test_a_periodic_job_prunes_in_every_worker(history: dict[str, Any]) -> None:
    [job] = [j for j in scheduler.jobs() if j.func is tasks.prune_webhooks]
    assert job.seconds == 300
    job.func()
    assert WebhookEvent.objects.count() == 3


def test_the_ops_page_shows_the_stored_bodies_and_the_table_size(history: dict[str, Any], alice: Any) -> None:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(alice)
    page = client.get("/ops/").content.decode()
    assert "Stored webhook bodies" in page
    assert "Webhook table size (all tenants)" in page
    figures = {f.key: f for f in retention.figures(history["campaign"].tenant, [])}
    assert figures["webhooks_stored"].value == 6
    assert figures["webhooks_stored"].ok is False  # processed bodies past the window: the job is not running
    size = figures["webhook_table_size"].value
    assert size is not None and size > 0
    prune()
    assert retention.figures(history["campaign"].tenant, [])[0].ok is True
