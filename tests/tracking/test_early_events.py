"""Status events that arrive before the send has recorded the message id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from campaigns import tracking
from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, PendingStatus, WebhookEvent
from tests.tracking.conftest import post_evolution, process_all, stats
from tests.webhook_payloads import evolution_send_message, evolution_update


def record_id(delivery: Delivery, message_id: str) -> None:
    """What the send does once the provider answers: sending -> sent with the id."""
    assert Delivery.move(
        delivery.pk, from_status="sending", to_status="sent", provider_message_id=message_id, sent_at=timezone.now()
    )


def test_events_before_the_id_is_recorded_are_kept_then_applied(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1, status=Delivery.Status.SENDING)
    post_evolution(evolution_connection, evolution_send_message("3EB0EARLY"))
    post_evolution(evolution_connection, evolution_update("3EB0EARLY", "DELIVERY_ACK"))
    process_all()

    assert WebhookEvent.objects.filter(status="processed").count() == 2
    assert PendingStatus.objects.filter(provider_message_id="3EB0EARLY").count() == 2
    delivery.refresh_from_db()
    assert delivery.status == "sending"
    assert stats(campaign)["pending"] == 1

    record_id(delivery, "3EB0EARLY")
    assert tracking.apply_early_events(delivery.pk) == 2

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    counters = stats(campaign)
    assert (counters["pending"], counters["sent"], counters["delivered"]) == (0, 1, 1)
    assert list(DeliveryEvent.objects.filter(delivery=delivery).values_list("status", flat=True)) == [
        "pending",
        "delivered",
    ]
    assert not PendingStatus.objects.exists()


def test_applying_early_events_twice_counts_them_once(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1, status=Delivery.Status.SENDING)
    post_evolution(evolution_connection, evolution_update("3EB0TWICE", "READ"))
    process_all()
    record_id(delivery, "3EB0TWICE")

    assert tracking.apply_early_events(delivery.pk) == 1
    assert tracking.apply_early_events(delivery.pk) == 0
    assert tracking.sweep(grace=0).early == 0

    assert stats(campaign)["read"] == 1
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == 1


def test_the_sweeper_applies_early_events_when_the_send_did_not(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1, status=Delivery.Status.SENDING)
    post_evolution(evolution_connection, evolution_update("3EB0SWEPT", "READ"))
    process_all()
    record_id(delivery, "3EB0SWEPT")  # ...and the sender died before calling apply_early_events

    assert tracking.sweep(grace=0).early == 1

    delivery.refresh_from_db()
    assert delivery.status == "read"
    assert stats(campaign)["read"] == 1


def test_events_after_the_id_is_recorded_apply_at_once(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [delivery] = deliveries(campaign, 1, status=Delivery.Status.SENDING)
    record_id(delivery, "3EB0LATE")
    post_evolution(evolution_connection, evolution_update("3EB0LATE", "SERVER_ACK"))
    with django_capture_on_commit_callbacks(execute=True):
        process_all()

    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert not PendingStatus.objects.exists()
    # Applied, not dropped: the status was "sent" already, so only the history shows it.
    assert list(DeliveryEvent.objects.filter(delivery=delivery).values_list("status", flat=True)) == ["sent"]


def test_an_early_event_whose_id_appears_during_processing_is_applied_after_commit(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The race: the webhook's lookup misses the id, the send records it and looks for early
    events before the webhook's transaction commits. The webhook looks again after commit."""
    [delivery] = deliveries(campaign, 1, status=Delivery.Status.SENDING)
    post_evolution(evolution_connection, evolution_update("3EB0RACE", "DELIVERY_ACK"))
    event_id = WebhookEvent.objects.get().pk

    original = tracking.apply_updates

    def lookup_then_send_records_the_id(*args: Any, **kwargs: Any) -> None:
        outcome = original(*args, **kwargs)
        record_id(delivery, "3EB0RACE")  # in the real race: another transaction, committed here
        return outcome

    tracking.apply_updates = lookup_then_send_records_the_id  # type: ignore[assignment]
    try:
        with django_capture_on_commit_callbacks(execute=True):
            tracking.process_event(event_id)
    finally:
        tracking.apply_updates = original  # type: ignore[assignment]

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert not PendingStatus.objects.exists()


def test_early_events_never_matched_expire(evolution_connection: Connection, settings: Any) -> None:
    post_evolution(evolution_connection, evolution_update("3EB0NEVER", "READ"))
    process_all()
    PendingStatus.objects.update(received_at=timezone.now() - timedelta(hours=100))
    settings.WEBHOOK_EARLY_EVENT_TTL_HOURS = 72

    assert tracking.sweep(grace=0).expired == 1
    assert not PendingStatus.objects.exists()
