"""The status rules, driven through `campaigns.tracking` directly: rank only goes up, read
implies delivered, failed only before delivered, duplicates are no-ops, and every order of
the same evidence (before or after the id is recorded) ends in the same state and counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import live, tracking
from campaigns.models import Campaign, Connection, Delivery, DeliveryEvent, PendingStatus
from campaigns.providers import StatusUpdate
from tests.tracking.conftest import make_campaign, make_deliveries, recount, stats

BASE = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def apply(delivery: Delivery, status: str, *, at: datetime | None = None, code: str = "") -> None:
    """One webhook event carrying one status, in its own transaction."""
    update = StatusUpdate(str(delivery.provider_message_id), status, at, code, "boom" if code else "", "test")
    with transaction.atomic():
        tracking.apply_updates(
            delivery.tenant_id, delivery.campaign.connection_id, [update], received_at=timezone.now()
        )


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        ("sent", "delivered", "delivered"),
        ("sent", "read", "read"),
        ("delivered", "sent", None),
        ("read", "delivered", None),
        ("read", "read", None),
        ("sent", "failed", "failed"),
        ("delivered", "failed", None),
        ("read", "failed", None),
        ("failed", "sent", None),
        ("failed", "delivered", "delivered"),
        ("failed", "read", "read"),
        ("failed", "failed", None),
        ("cancelled", "read", None),
        ("unknown", "delivered", "delivered"),
        ("sent", "pending", None),
    ],
)
def test_next_status(current: str, incoming: str, expected: str | None) -> None:
    assert Delivery.next_status(current, incoming) == expected


def test_a_status_only_moves_up(campaign: Campaign) -> None:
    [delivery] = make_deliveries(campaign, 1)
    apply(delivery, "read", at=BASE)
    apply(delivery, "delivered", at=BASE - timedelta(seconds=5))
    apply(delivery, "sent", at=BASE - timedelta(seconds=9))

    delivery.refresh_from_db()
    assert delivery.status == "read"
    # Late, earlier evidence still refines the timestamps to the earliest proof of each stage.
    assert delivery.delivered_at == BASE - timedelta(seconds=5)
    assert delivery.sent_at == BASE - timedelta(seconds=9)
    assert stats(campaign) == recount(campaign)


def test_a_failure_after_delivery_is_ignored(campaign: Campaign) -> None:
    [delivery] = make_deliveries(campaign, 1)
    apply(delivery, "delivered", at=BASE)
    apply(delivery, "failed", at=BASE, code="131026")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.failed_at, delivery.error_code) == ("delivered", None, "")
    assert DeliveryEvent.objects.filter(delivery=delivery, status="failed").exists()  # but kept in the history


def test_later_evidence_of_delivery_moves_a_failed_delivery_on(campaign: Campaign) -> None:
    [delivery] = make_deliveries(campaign, 1)
    apply(delivery, "failed", at=BASE, code="131049")
    assert stats(campaign)["failed"] == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_code) == ("failed", "131049")

    apply(delivery, "read", at=BASE + timedelta(seconds=1))

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_code, delivery.failed_at) == ("read", "", None)
    counters = stats(campaign)
    assert (counters["failed"], counters["sent"], counters["delivered"], counters["read"]) == (0, 1, 1, 1)


def test_a_cancelled_delivery_is_not_moved(campaign: Campaign) -> None:
    [delivery] = make_deliveries(campaign, 1, status=Delivery.Status.CANCELLED)
    Delivery.objects.filter(pk=delivery.pk).update(provider_message_id="wamid.cancelled")
    delivery.refresh_from_db()
    apply(delivery, "read", at=BASE)

    delivery.refresh_from_db()
    assert delivery.status == "cancelled" and delivery.read_at is None
    assert stats(campaign)["cancelled"] == 1


def test_every_change_is_broadcast_after_commit(transactional_db: Any, campaign: Campaign, monkeypatch: Any) -> None:
    from datetime import datetime

    from django.utils import timezone

    from sense import realtime

    sent: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(realtime, "broadcast", lambda tenant_id, message: sent.append((tenant_id, message)))
    [delivery] = make_deliveries(campaign, 1)

    before = timezone.now()
    apply(delivery, "delivered", at=BASE)  # commits: the frame follows from the coalescer thread
    live._stats_coalescer.drain()

    [(tenant_id, message)] = sent
    assert tenant_id == campaign.tenant_id
    assert message["type"] == "campaign.stats"
    assert message["campaign_id"] == str(campaign.pk) and message["status"] == "running"
    assert message["stats"]["delivered"] == 1
    assert before <= datetime.fromisoformat(message["sent_at"]) <= timezone.now()  # when it was made


# --- The property: order and duplicates never matter -------------------------------------------

EVIDENCE = st.lists(
    st.tuples(st.sampled_from(["sent", "delivered", "read", "failed"]), st.integers(min_value=0, max_value=5)),
    min_size=1,
    max_size=7,
)


def expected_state(events: list[tuple[str, int]], sent_at: datetime | None) -> dict[str, Any]:
    """What the evidence proves, independent of order: the highest stage, failed only
    without delivery evidence, and the earliest time of each stage."""
    kinds = {kind for kind, _ in events}

    def first(*wanted: str) -> datetime | None:
        times = [BASE + timedelta(seconds=s) for kind, s in events if kind in wanted]
        return min(times) if times else None

    if "read" in kinds:
        status = "read"
    elif "delivered" in kinds:
        status = "delivered"
    elif "failed" in kinds:
        status = "failed"
    else:
        status = "sent"
    proof_of_sending = first("sent", "delivered", "read")
    return {
        "status": status,
        "sent_at": min(t for t in (sent_at, proof_of_sending) if t is not None)
        if sent_at or proof_of_sending
        else None,
        "delivered_at": first("delivered", "read"),
        "read_at": first("read"),
        "failed_at": first("failed") if status == "failed" else None,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVIDENCE, data=st.data())
def test_every_order_with_duplicates_gives_the_same_state_and_counters(
    evolution_connection: Connection, events: list[tuple[str, int]], data: Any
) -> None:
    order = data.draw(st.permutations(events))
    # The send records the message id after RECORD_AT of the events have already arrived.
    record_at = data.draw(st.integers(min_value=0, max_value=len(order)))
    campaign = make_campaign(evolution_connection)
    [delivery] = make_deliveries(campaign, 1, status=Delivery.Status.SENDING)
    message_id = f"3EB0{delivery.pk:016X}"
    sent_at = BASE + timedelta(seconds=3)

    def arrive(evidence: list[tuple[str, int]]) -> None:
        """Apply EVIDENCE in batches of random size (as a worker's batch of events does)."""
        while evidence:
            size = data.draw(st.integers(min_value=1, max_value=len(evidence)))
            batch, evidence = evidence[:size], evidence[size:]
            updates = [
                StatusUpdate(message_id, kind, BASE + timedelta(seconds=seconds), "E1" if kind == "failed" else "")
                for kind, seconds in batch
            ]
            with transaction.atomic():
                tracking.apply_updates(campaign.tenant_id, evolution_connection.pk, updates, received_at=timezone.now())

    arrive(order[:record_at])
    assert Delivery.move(
        delivery.pk, from_status="sending", to_status="sent", provider_message_id=message_id, sent_at=sent_at
    )
    tracking.apply_early_events(delivery.pk)
    arrive(order[record_at:])

    delivery.refresh_from_db()
    expected = expected_state(events, sent_at)
    actual = {name: getattr(delivery, name) for name in expected}
    assert actual == expected
    counters = stats(campaign)
    assert counters == recount(campaign)
    assert counters["total"] == 1 and counters["pending"] == 0
    assert DeliveryEvent.objects.filter(delivery=delivery).count() == len(events)
    assert not PendingStatus.objects.filter(provider_message_id=message_id).exists()
