"""Starting a campaign at any audience size: the start answers at once with the campaign
`preparing`; a worker's run (`campaign_prepare`, the `prepare_campaign` actor) takes the
audience snapshot in chunks, then the campaign runs. Pause, cancel, crashes and the sweeper."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import live, services, snapshot, tasks
from campaigns.models import Campaign, Connection, Delivery
from tests.conftest import ApiClient
from tests.dashboard.conftest import login


@pytest.fixture
def enqueued(monkeypatch: Any) -> dict[str, list[Any]]:
    """What the services enqueue (instead of sending to the broker): senders and snapshots."""
    calls: dict[str, list[Any]] = {"senders": [], "preparations": []}
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: calls["senders"].append(campaign_id))
    monkeypatch.setattr(services, "_enqueue_preparation", lambda campaign_id: calls["preparations"].append(campaign_id))
    return calls


def _prepare(campaign: Campaign, **options: Any) -> services.Preparation:
    """One run of the worker on CAMPAIGN (CAMPAIGN is refreshed after it)."""
    outcome = services.campaign_prepare(campaign_id=campaign.pk, **options)
    campaign.refresh_from_db()
    return outcome


def _one_chunk(campaign: Campaign, size: int = 3) -> services.Preparation:
    """A run that stops after one chunk of SIZE contacts (its slice is over at once)."""
    return _prepare(campaign, chunk_size=size, slice_seconds=0)


def _no_drift(campaign: Campaign) -> bool:
    return services.campaign_recalc_stats(campaign_ids=[campaign.pk], fix=False) == []


@pytest.fixture
def started(
    enqueued: dict[str, list[Any]], evolution: Connection, make_contacts: Callable[..., Any], make_campaign: Any
) -> Campaign:
    """A campaign of 7 contacts just started: preparing, nothing snapshotted yet."""
    make_contacts(7)
    campaign = make_campaign(evolution)
    services.campaign_start(campaign=campaign)
    return campaign


def test_the_start_answers_preparing_and_reads_nothing_of_the_audience(
    api_alice: ApiClient,
    enqueued: dict[str, list[Any]],
    evolution: Connection,
    make_contacts: Callable[..., Any],
    make_campaign: Any,
) -> None:
    api_alice.get_json("/api/campaigns/")  # the token's once-a-minute last_used_at write, out of the way
    queries: list[int] = []
    for size in (0, 300):
        make_contacts(size, start=1000 * len(queries))
        campaign = make_campaign(evolution)
        with CaptureQueriesContext(db_connection) as captured:
            body = api_alice.post_json(f"/api/campaigns/{campaign.id}/start/").json()
        assert body["status"] == "preparing" and body["started_at"] and body["prepared_at"] is None
        assert body["preparation"] == {"prepared": 0, "total": None}
        assert not Delivery.objects.filter(campaign=campaign).exists()
        assert not any("campaigns_contact" in q["sql"] for q in captured.captured_queries)
        queries.append(len(captured.captured_queries))
    assert queries[0] == queries[1]  # the same work at any audience size
    assert len(enqueued["preparations"]) == 2 and not enqueued["senders"]


def test_the_start_sends_the_preparation_actor_on_commit(
    evolution: Connection, make_campaign: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(tasks.prepare_campaign, "send", lambda campaign_id: sent.append(campaign_id))
    campaign = make_campaign(evolution)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.campaign_start(campaign=campaign)
    assert sent == []  # not before the start commits
    for callback in callbacks:
        callback()
    assert sent == [str(campaign.pk)]


def test_the_snapshot_goes_in_chunks_with_exact_counters_then_the_campaign_runs(
    started: Campaign, enqueued: dict[str, list[Any]]
) -> None:
    first = _one_chunk(started)
    assert first.created == 3 and first.again and first.status is None
    assert started.status == Campaign.Status.PREPARING
    assert started.preparation == {"prepared": 3, "total": 7}
    assert started.stat_total == started.stat_pending == 3
    assert _no_drift(started)  # counters exact mid-way
    assert not enqueued["senders"]

    assert _one_chunk(started).created == 3
    last = _prepare(started, chunk_size=3)
    assert last.created == 1 and not last.again and last.status == Campaign.Status.RUNNING
    assert started.status == Campaign.Status.RUNNING and started.prepared_at and started.preparation is None
    assert started.stats["total"] == started.stats["pending"] == started.audience_count == 7
    assert enqueued["senders"] == [started.pk]
    assert Delivery.objects.filter(campaign=started).count() == 7
    assert _no_drift(started)


def test_the_actor_hands_over_to_a_fresh_message_when_its_slice_ends(
    started: Campaign, monkeypatch: Any, settings: Any
) -> None:
    settings.CAMPAIGN_PREPARE_CHUNK = 2
    sent: list[str] = []
    monkeypatch.setattr(tasks.prepare_campaign, "send", lambda campaign_id: sent.append(campaign_id))
    monkeypatch.setattr(services, "PREPARE_SLICE_SECONDS", 0.0)
    tasks.prepare_campaign(str(started.pk))
    assert sent == [str(started.pk)]
    started.refresh_from_db()
    assert started.stat_total == 2 and started.prepare_owner is None  # released for the next message


def test_pausing_while_preparing_lets_the_snapshot_finish_and_leaves_it_paused(
    api_alice: ApiClient, started: Campaign, enqueued: dict[str, list[Any]]
) -> None:
    _one_chunk(started)
    body = api_alice.post_json(f"/api/campaigns/{started.id}/pause/").json()
    assert body["status"] == "paused" and body["preparation"] == {"prepared": 3, "total": 7}

    outcome = _prepare(started)
    assert outcome.status == Campaign.Status.PAUSED
    assert started.status == Campaign.Status.PAUSED and started.prepared_at and started.stat_pending == 7
    assert not enqueued["senders"]

    assert api_alice.post_json(f"/api/campaigns/{started.id}/resume/").json()["status"] == "running"
    assert enqueued["senders"] == [started.pk]


def test_resuming_before_the_snapshot_ends_goes_back_to_preparing(
    api_alice: ApiClient, started: Campaign, enqueued: dict[str, list[Any]]
) -> None:
    _one_chunk(started)
    api_alice.post_json(f"/api/campaigns/{started.id}/pause/")
    body = api_alice.post_json(f"/api/campaigns/{started.id}/resume/").json()
    assert body["status"] == "preparing" and not enqueued["senders"]
    assert _prepare(started).status == Campaign.Status.RUNNING
    assert enqueued["senders"] == [started.pk]


def test_cancelling_while_preparing_stops_the_snapshot_and_leaves_nothing_pending(
    api_alice: ApiClient, started: Campaign, enqueued: dict[str, list[Any]]
) -> None:
    _one_chunk(started)
    body = api_alice.post_json(f"/api/campaigns/{started.id}/cancel/").json()
    assert body["status"] == "cancelled" and body["preparation"] is None
    assert body["stats"]["cancelled"] == 3 and body["stats"]["pending"] == 0

    assert _prepare(started).created == 0  # the run finds nothing to claim
    assert Delivery.objects.filter(campaign=started).count() == 3
    assert not Delivery.objects.filter(campaign=started, status=Delivery.Status.PENDING).exists()
    assert _no_drift(started) and not enqueued["senders"]


@pytest.mark.django_db(transaction=True)
def test_a_cancel_never_waits_for_a_chunk_and_rolls_it_back(started: Campaign, monkeypatch: Any) -> None:
    original = snapshot.insert_deliveries

    def chunk_with_a_cancel_arriving(campaign: Campaign, **bounds: int) -> int:
        created = original(campaign, **bounds)
        if bounds["after"] > 0:  # the second chunk, its rows written, its transaction open:
            _in_another_session(services.campaign_cancel, started)  # the cancel commits meanwhile
        return created

    monkeypatch.setattr(snapshot, "insert_deliveries", chunk_with_a_cancel_arriving)
    outcome = _prepare(started, chunk_size=3)
    assert outcome.created == 3 and outcome.status is None  # the second chunk rolled back
    assert started.status == Campaign.Status.CANCELLED
    assert list(Delivery.objects.filter(campaign=started).values_list("status", flat=True)) == ["cancelled"] * 3
    assert started.stat_cancelled == started.stat_total == 3 and started.stat_pending == 0
    assert _no_drift(started)


@pytest.mark.django_db(transaction=True)
def test_a_cancel_after_a_chunk_committed_cancels_its_deliveries(started: Campaign, monkeypatch: Any) -> None:
    original = snapshot.next_bound

    def cancel_between_chunks(campaign: Campaign, *, after: int, size: int) -> int | None:
        if after > 0:  # one chunk committed
            _in_another_session(services.campaign_cancel, started)
        return original(campaign, after=after, size=size)

    monkeypatch.setattr(snapshot, "next_bound", cancel_between_chunks)
    outcome = _prepare(started, chunk_size=3)
    assert outcome.created == 3 and started.status == Campaign.Status.CANCELLED
    assert not Delivery.objects.filter(campaign=started, status=Delivery.Status.PENDING).exists()
    assert started.stat_cancelled == 3 and _no_drift(started)


def _in_another_session(service: Callable[..., Any], campaign: Campaign) -> None:
    """SERVICE on a fresh copy of CAMPAIGN, from a database session of its own (a thread)."""

    def run() -> None:
        try:
            service(campaign=Campaign.objects.get(pk=campaign.pk))
        finally:
            db_connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_run_that_fails_mid_way_is_retried_without_duplicating_deliveries(
    started: Campaign, monkeypatch: Any
) -> None:
    original = snapshot.insert_deliveries
    calls = []

    def fail_on_the_second_chunk(campaign: Campaign, **bounds: int) -> int:
        calls.append(bounds)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return original(campaign, **bounds)

    monkeypatch.setattr(snapshot, "insert_deliveries", fail_on_the_second_chunk)
    with pytest.raises(RuntimeError):
        _prepare(started, chunk_size=3)
    started.refresh_from_db()
    assert started.prepare_owner is None  # released: the retry claims it at once
    assert started.stat_total == 3 and started.prepare_cursor == calls[0]["upto"]  # the failed chunk left nothing

    assert _prepare(started, chunk_size=3).status == Campaign.Status.RUNNING
    assert calls[2]["after"] == calls[0]["upto"]  # went on from the last chunk committed
    contacts = list(Delivery.objects.filter(campaign=started).values_list("contact_id", flat=True))
    assert len(contacts) == len(set(contacts)) == 7
    assert _no_drift(started)


def test_a_crashed_run_is_restarted_by_the_sweeper_once_its_heartbeat_is_stale(
    started: Campaign, enqueued: dict[str, list[Any]], settings: Any
) -> None:
    _one_chunk(started)
    crashed = uuid.uuid4()  # a run that died without releasing the snapshot
    Campaign.objects.filter(pk=started.pk).update(prepare_owner=crashed, dispatch_seen_at=timezone.now())
    enqueued["preparations"].clear()

    assert _prepare(started).created == 0  # a second message while the owner looks alive: nothing
    assert services.campaigns_kick_stalled() == [] and enqueued["preparations"] == []

    stale = timezone.now() - timedelta(seconds=settings.CAMPAIGN_PREPARE_STALE_SECONDS + 1)
    Campaign.objects.filter(pk=started.pk).update(dispatch_seen_at=stale)
    assert services.campaigns_kick_stalled() == [started.pk]
    assert enqueued["preparations"] == [started.pk]
    assert services.campaigns_kick_stalled() == []  # once, not on every sweep
    # The old run, if it was only slow, has lost the snapshot: its next chunk changes nothing.
    assert not Campaign.advance_preparation(started.pk, crashed, upto=10**9)

    assert _prepare(started).status == Campaign.Status.RUNNING
    contacts = list(Delivery.objects.filter(campaign=started).values_list("contact_id", flat=True))
    assert len(contacts) == len(set(contacts)) == 7
    assert _no_drift(started)


def test_a_paused_campaign_whose_snapshot_stalled_is_restarted_too(
    started: Campaign, enqueued: dict[str, list[Any]], settings: Any
) -> None:
    _one_chunk(started)
    services.campaign_pause(campaign=Campaign.objects.get(pk=started.pk))
    stale = timezone.now() - timedelta(seconds=settings.CAMPAIGN_PREPARE_STALE_SECONDS + 1)
    Campaign.objects.filter(pk=started.pk).update(prepare_owner=uuid.uuid4(), dispatch_seen_at=stale)
    assert services.campaigns_kick_stalled() == [started.pk]
    assert _prepare(started).status == Campaign.Status.PAUSED and started.prepared_at


def test_tags_and_opt_outs_choose_the_audience(
    enqueued: dict[str, list[Any]], evolution: Connection, make_contacts: Callable[..., Any], make_campaign: Any
) -> None:
    make_contacts(3, tags=["vip"])
    make_contacts(2, start=10, tags=["other"])
    make_contacts(2, start=20, tags=["vip", "other"], opted_out=True)
    make_contacts(1, start=30, tags=["VIP"])  # tags match exactly
    make_contacts(1, start=40, tags=["vipers"])
    campaign = make_campaign(evolution, tags=["vip", "nobody"])
    services.campaign_start(campaign=campaign)
    assert _prepare(campaign, chunk_size=2).status == Campaign.Status.RUNNING
    names = sorted(Delivery.objects.filter(campaign=campaign).values_list("contact__name", flat=True))
    assert names == ["Contact 0", "Contact 1", "Contact 2"]
    assert campaign.audience_count == 3


def test_a_due_scheduled_campaign_starts_preparing(
    enqueued: dict[str, list[Any]], evolution: Connection, make_contacts: Callable[..., Any], make_campaign: Any
) -> None:
    make_contacts(2)
    campaign = make_campaign(evolution, status=Campaign.Status.SCHEDULED, scheduled_at=timezone.now())
    assert services.campaigns_start_due() == [campaign.pk]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PREPARING and enqueued["preparations"] == [campaign.pk]
    assert _prepare(campaign).status == Campaign.Status.RUNNING


def test_live_frames_carry_the_preparation(started: Campaign, monkeypatch: Any) -> None:
    frames: list[dict[str, Any]] = []
    monkeypatch.setattr(live.realtime, "broadcast", lambda tenant_id, frame: frames.append(frame))
    _one_chunk(started)
    live._publish_stats({started.pk})
    assert frames[-1]["status"] == "preparing"
    assert frames[-1]["preparation"] == {"prepared": 3, "total": 7}
    assert frames[-1]["stats"]["total"] == 3
    _prepare(started)
    live._publish_stats({started.pk})
    assert frames[-1]["status"] == "running" and frames[-1]["preparation"] is None


def test_the_pages_show_the_preparation_and_its_actions(alice: Any, started: Campaign) -> None:
    _one_chunk(started)
    client: Client = login("alice")
    page = client.get(f"/campaigns/{started.id}/").content.decode()
    assert "data-preparation" in page and "data-prepared>3<" in page and "data-prepare-total>7<" in page
    assert f"/campaigns/{started.id}/pause/" in page and f"/campaigns/{started.id}/cancel/" in page
    assert f"/campaigns/{started.id}/start/" not in page
    listing = client.get("/campaigns/").content.decode()
    assert "data-preparation" in listing and "status-preparing" in listing
    assert client.post(f"/campaigns/{started.id}/pause/").status_code == 302
    started.refresh_from_db()
    assert started.status == Campaign.Status.PAUSED


def test_a_campaign_with_no_snapshot_in_progress_is_never_taken_for_preparing(
    enqueued: dict[str, list[Any]], evolution: Connection, make_contacts: Callable[..., Any], make_campaign: Any
) -> None:
    make_contacts(2)
    campaign = make_campaign(evolution, status=Campaign.Status.PAUSED)  # e.g. paused before this feature
    stale = timezone.now() - timedelta(days=1)
    Campaign.objects.filter(pk=campaign.pk).update(dispatch_seen_at=stale)
    assert campaign.preparation is None
    assert services.campaigns_kick_stalled() == [] and not enqueued["preparations"]
    assert _prepare(campaign).created == 0
    services.campaign_resume(campaign=campaign)
    assert campaign.status == Campaign.Status.RUNNING and enqueued["senders"] == [campaign.pk]
