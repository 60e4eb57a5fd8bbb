"""Stored events are processed exactly once: by the actor on a real worker, by the sweeper
when the broker was unreachable, never twice when both (or two workers) try."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
import pytest
from django.db import OperationalError
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from campaigns import tasks, tracking
from campaigns.models import Campaign, Connection, DeliveryEvent, WebhookEvent
from tests.helpers import at_once, free_port, wait_for
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries, post_evolution, recount, stats
from tests.webhook_payloads import evolution_update


def all_processed() -> None:
    """Wait until the worker has processed every stored event (cheaper than joining queues)."""
    wait_for(lambda: not WebhookEvent.objects.filter(status="pending").exists(), what="events processed")


def test_the_event_is_stored_before_the_answer_and_processed_later(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1)

    response = post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "READ"))

    assert response.status_code == 200
    event = WebhookEvent.objects.get(pk=response.json()["id"])
    assert (event.status, event.provider, event.event_type, event.tenant_id) == (
        "pending",
        "evolution",
        "messages.update",
        campaign.tenant_id,
    )
    assert json.loads(event.body)["data"]["keyId"] == delivery.provider_message_id
    assert stats(campaign)["read"] == 0


def test_the_actor_applies_stored_events_on_a_real_worker(dramatiq_worker: dramatiq.Worker, acme: Any) -> None:
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection)
    rows = make_deliveries(campaign, 5)

    for n, delivery in enumerate(rows):
        status = ["DELIVERY_ACK", "READ", "ERROR", "SERVER_ACK", "PLAYED"][n]
        assert post_evolution(connection, evolution_update(delivery.provider_message_id, status)).status_code == 200
    all_processed()

    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    counters = stats(campaign)
    assert (counters["sent"], counters["delivered"], counters["read"], counters["failed"]) == (4, 3, 2, 1)
    assert counters == recount(campaign)


def test_rabbitmq_unreachable_still_answers_200_and_the_sweeper_applies_the_events(
    transactional_db: Any, acme: Any, monkeypatch: Any
) -> None:
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection)
    rows = make_deliveries(campaign, 3)
    # A broker on a port nobody listens on: every send fails to connect.
    closed = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", confirm_delivery=True)
    monkeypatch.setattr(tasks.process_webhook_events, "broker", closed)

    for delivery in rows:
        response = post_evolution(connection, evolution_update(delivery.provider_message_id, "DELIVERY_ACK"))
        assert response.status_code == 200
    assert WebhookEvent.objects.filter(status="pending").count() == 3
    assert stats(campaign)["delivered"] == 0

    # The broker is back (or not: the sweeper runs in any worker) and the events are applied.
    assert tracking.sweep(grace=0).events == 3

    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert stats(campaign)["delivered"] == 3
    assert tracking.sweep(grace=0).events == 0


def test_the_sweeper_leaves_fresh_events_to_the_actor(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any
) -> None:
    [delivery] = deliveries(campaign, 1)
    post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "READ"))

    assert tracking.sweep(grace=60).events == 0
    assert WebhookEvent.objects.get().status == "pending"


def test_two_workers_processing_the_same_event_apply_it_once(transactional_db: Any, acme: Any) -> None:
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection_)
    [delivery] = make_deliveries(campaign, 1)
    post_evolution(connection_, evolution_update(delivery.provider_message_id, "READ"))
    event_id = WebhookEvent.objects.get().pk
    outcomes = at_once(lambda: tracking.process_event(event_id).status, threads=4)

    assert sorted(outcomes) == ["processed", "skipped", "skipped", "skipped"]
    assert DeliveryEvent.objects.count() == 1
    assert stats(campaign)["read"] == 1 and stats(campaign) == recount(campaign)


def test_a_transient_error_keeps_the_event_for_a_retry(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, monkeypatch: Any, settings: Any
) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    [delivery] = deliveries(campaign, 1)
    post_evolution(evolution_connection, evolution_update(delivery.provider_message_id, "READ"))
    event_id = WebhookEvent.objects.get().pk

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(tracking, "apply_updates", down)
    with pytest.raises(OperationalError):
        tracking.process_event(event_id)
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("pending", 1)
    assert "server closed" in event.error

    with pytest.raises(OperationalError):
        tracking.process_event(event_id)
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("failed", 2)  # visible, no longer retried
    assert stats(campaign)["read"] == 0


def test_a_bug_marks_the_event_failed_without_partial_changes(
    evolution_connection: Connection, campaign: Campaign, deliveries: Any, monkeypatch: Any
) -> None:
    first, second = deliveries(campaign, 2)
    payload = evolution_update(first.provider_message_id, "READ", as_list=True)
    payload["data"].append({**payload["data"][0], "keyId": second.provider_message_id})
    post_evolution(evolution_connection, payload)
    original = tracking.apply_update
    calls = []

    def breaks_on_the_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a bug")
        return original(*args, **kwargs)

    monkeypatch.setattr(tracking, "apply_update", breaks_on_the_second)
    assert tracking.process_event(WebhookEvent.objects.get().pk).status == "failed"

    assert WebhookEvent.objects.get().status == "failed"
    assert stats(campaign)["read"] == 0  # the first delivery's change was rolled back with the rest
    assert not DeliveryEvent.objects.exists()


def test_the_sweeper_job_is_registered() -> None:
    from sense import scheduler

    assert "campaigns.tasks.sweep_webhooks" in {job.name for job in scheduler.jobs()}


def test_a_worker_that_was_down_catches_up(dramatiq_worker: dramatiq.Worker, acme: Any) -> None:
    """Events stored while no worker ran (queued in RabbitMQ) are applied once one runs."""
    connection_ = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign = make_campaign(connection_)
    rows = make_deliveries(campaign, 10)
    dramatiq_worker.pause()
    for delivery in rows:
        post_evolution(connection_, evolution_update(delivery.provider_message_id, "READ"))
    assert stats(campaign)["read"] == 0

    dramatiq_worker.resume()
    all_processed()
    assert stats(campaign)["read"] == 10
    assert stats(campaign) == recount(campaign)
