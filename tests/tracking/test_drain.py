"""A woken worker process applies pending events with one thread while they keep coming
(`tracking.drain_pending`): wake-ups that arrive meanwhile make it look again instead of
starting batches of their own, so a storm's events go in a few large batches."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from campaigns import tasks, tracking
from campaigns.models import Campaign, Connection, WebhookEvent
from tests.helpers import wait_for
from tests.tracking.conftest import make_campaign, make_connection, make_deliveries, post_evolution, recount, stats
from tests.webhook_payloads import evolution_update


def scripted(monkeypatch: Any, results: list[int], during: dict[int, Any] | None = None) -> list[int]:
    """process_pending returns RESULTS in turn (0 once they run out), running DURING[n] inside
    its nth call; returns the list of calls made."""
    calls: list[int] = []

    def fake(*, limit: int = 200) -> int:
        calls.append(len(calls))
        if during and len(calls) - 1 in during:
            during[len(calls) - 1]()
        return results[len(calls) - 1] if len(calls) <= len(results) else 0

    monkeypatch.setattr(tracking, "process_pending", fake)
    return calls


def test_the_drain_stops_at_the_first_look_that_finds_nothing(monkeypatch: Any) -> None:
    calls = scripted(monkeypatch, [5, 3])
    assert tracking.drain_pending(interval=0) is False
    assert len(calls) == 3  # 5, 3, then nothing


def test_a_wake_up_during_a_drain_starts_nothing_and_makes_the_drain_look_again(monkeypatch: Any) -> None:
    answers: list[bool] = []

    def wake_up() -> None:
        thread = threading.Thread(target=lambda: answers.append(tracking.drain_pending(interval=0)))
        thread.start()
        thread.join()

    # The wake-up comes during the last look, which finds nothing: its event may have been
    # committed after that look's SELECT, so the drain looks once more.
    calls = scripted(monkeypatch, [4, 0, 0], during={1: wake_up})
    assert tracking.drain_pending(interval=0) is False
    assert answers == [False]  # returned at once, no batch of its own
    assert len(calls) == 3
    assert tracking._drainer.running is False


def test_the_drain_hands_over_at_its_budget_and_the_actor_wakes_a_worker_again(monkeypatch: Any) -> None:
    calls = scripted(monkeypatch, [7, 7, 7])
    assert tracking.drain_pending(interval=0, budget=0) is True
    assert len(calls) == 1 and tracking._drainer.running is False

    sent: list[int] = []
    monkeypatch.setattr(tracking, "drain_pending", lambda: True)
    monkeypatch.setattr(tasks.process_webhook_events, "send", lambda: sent.append(1))
    tasks.process_webhook_events.fn()
    assert sent == [1]
    monkeypatch.setattr(tracking, "drain_pending", lambda: False)
    tasks.process_webhook_events.fn()
    assert sent == [1]


def test_a_failing_batch_leaves_the_next_wake_up_free_to_drain(monkeypatch: Any) -> None:
    def boom(*, limit: int = 200) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(tracking, "process_pending", boom)
    with pytest.raises(RuntimeError):
        tracking.drain_pending(interval=0)
    calls = scripted(monkeypatch, [2])
    assert tracking.drain_pending(interval=0) is False
    assert len(calls) == 2


@pytest.mark.django_db(transaction=True)
def test_events_stored_while_a_worker_drains_are_applied_by_that_drain(acme: Any, monkeypatch: Any) -> None:
    connection_: Connection = make_connection(acme, Connection.Provider.EVOLUTION)
    campaign: Campaign = make_campaign(connection_)
    rows = make_deliveries(campaign, 30)
    real = tracking.process_pending
    posted = threading.Event()
    batches: list[int] = []

    def batch(*, limit: int = 200) -> int:
        claimed = real(limit=limit)
        batches.append(claimed)
        if len(batches) == 1:  # the other half arrives, each with its wake-up, mid-drain
            for delivery in rows[15:]:
                assert (
                    post_evolution(connection_, evolution_update(delivery.provider_message_id, "READ")).status_code
                    == 200
                )
                tracking.drain_pending(interval=0.01)
            posted.set()
        return claimed

    for delivery in rows[:15]:
        assert post_evolution(connection_, evolution_update(delivery.provider_message_id, "READ")).status_code == 200
    monkeypatch.setattr(tracking, "process_pending", batch)
    assert tracking.drain_pending(interval=0.01) is False
    wait_for(posted.is_set, what="the mid-drain webhooks")
    assert batches[0] == 15 and sum(batches) == 30
    assert not WebhookEvent.objects.filter(status="pending").exists()
    assert stats(campaign)["read"] == 30 and stats(campaign) == recount(campaign)
