"""The sender: what one `dispatch_campaign` actor run does for a running campaign.

Each send is:

1. take rate-limit budget for the connection (shared in Redis across processes);
2. claim deliveries: `SELECT ... FOR UPDATE SKIP LOCKED` on pending rows of a *running*
   campaign, moved pending -> sending in the same transaction (so a pause that has
   committed stops every new claim at once, and two senders never claim the same row);
3. call the provider;
4. record the answer: `Delivery.move(sending -> sent, provider_message_id=...)`, or failed
   (permanent error), or back to pending (transient: retried later), or unknown (the
   request may have gone out but no answer came back).

A worker killed between 3 and 4 leaves the delivery in `sending`; the sweeper turns it
into `unknown` and nothing ever sends it again: at most once, never blindly twice.

A run lasts at most `SLICE_SECONDS`, then re-enqueues itself, so workers stay shared
between campaigns and a killed worker's message (redelivered by RabbitMQ) picks up where
it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from campaigns import ratelimit
from campaigns.live import broadcast_stats, broadcast_stats_on_commit
from campaigns.models import Campaign, Delivery, PendingStatus
from campaigns.providers import Media, OutgoingMessage, Provider, ProviderError, provider_class, provider_for
from campaigns.tracking import apply_early_events

log = logging.getLogger("sense.campaigns")

SLICE_SECONDS = 20.0
HEARTBEAT_SECONDS = 5.0
# Longer waits for rate budget are not slept: the run re-enqueues itself with a delay.
MAX_SLEEP = 2.0
MEDIA_URL_REFRESH = 60.0


@dataclass
class Claimed:
    id: int
    phone: str
    text: str
    attempts: int
    errors_before: int = 0  # the campaign's run of provider errors when claimed


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    unknown: int = 0
    reschedule_in: float | None = None  # seconds; None: do not re-enqueue
    stopped: str = ""


def claim(campaign_id: Any, n: int) -> list[Claimed]:
    """Claim up to N pending deliveries of CAMPAIGN_ID (only while it is running)."""
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(campaign_id=campaign_id, status=Delivery.Status.PENDING, campaign__status=Campaign.Status.RUNNING)
            .order_by("pk")
            .values_list("pk", "phone", "text", "attempts", "campaign__consecutive_errors")[:n]
        )
        if not rows:
            return []
        ids = [row[0] for row in rows]
        moved = Delivery.move_many(
            campaign_id=campaign_id,
            from_status=Delivery.Status.PENDING,
            to_status=Delivery.Status.SENDING,
            ids=ids,
            claimed_at=timezone.now(),
            attempts=F("attempts") + 1,
        )
        # The rows are locked by this transaction and filtered on status: all of them moved.
        assert moved == len(ids), (moved, ids)
    return [
        Claimed(id=pk, phone=phone, text=text, attempts=attempts + 1, errors_before=errors)
        for pk, phone, text, attempts, errors in rows
    ]


def _unsent_status(campaign_id: Any) -> str:
    """Where a claimed delivery that was not sent goes back to: pending, or cancelled if the
    campaign was cancelled meanwhile."""
    cancelled = Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.CANCELLED).exists()
    return Delivery.Status.CANCELLED if cancelled else Delivery.Status.PENDING


def release(campaign_id: Any, ids: list[int]) -> None:
    """Give claimed-but-unsent deliveries back: pending again, or cancelled if the campaign was."""
    if not ids:
        return
    Delivery.move_many(
        campaign_id=campaign_id,
        from_status=Delivery.Status.SENDING,
        to_status=_unsent_status(campaign_id),
        ids=ids,
        claimed_at=None,
        attempts=F("attempts") - 1,
    )


def record_sent(campaign_id: Any, tenant_id: Any, sent: dict[int, str]) -> None:
    """Record SENT (delivery id -> provider message id): sending -> sent, in one transaction."""
    if not sent:
        return
    now = timezone.now()
    changes = {
        delivery_id: {"provider_message_id": message_id, "sent_at": now, "error_code": "", "error_message": ""}
        for delivery_id, message_id in sent.items()
    }
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Losing this commit in a database crash leaves the deliveries in `sending` (later
            # `unknown`), never pending: no duplicate. So it need not wait for the WAL flush,
            # which keeps the campaign row's counter lock short. The claim stays synchronous.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        moved = Delivery.move_each(
            campaign_id=campaign_id,
            from_status=Delivery.Status.SENDING,
            to_status=Delivery.Status.SENT,
            changes=changes,
        )
        for delivery_id in set(changes) - set(moved):
            # The sweeper gave up on it (a very slow provider): we now know it was sent.
            Delivery.move(
                delivery_id, from_status=Delivery.Status.UNKNOWN, to_status=Delivery.Status.SENT, **changes[delivery_id]
            )
    # Status webhooks can beat the send call's answer; the tracking side parks them until
    # the id is known. Most sends have none: find which do before taking any locks, and
    # apply them to those deliveries only.
    early = set(
        PendingStatus.objects.filter(tenant_id=tenant_id, provider_message_id__in=list(sent.values())).values_list(
            "provider_message_id", flat=True
        )
    )
    if early:
        for delivery_id in (d for d, message_id in sent.items() if message_id in early):
            try:
                apply_early_events(delivery_id)
            except Exception:  # the tracking sweeper applies them later; the send itself is recorded
                log.exception("[CAMPAIGN] early status events for delivery %s not applied", delivery_id)


def record_failure(campaign: Campaign, item: Claimed, error: ProviderError, outcome: Outcome) -> None:
    """Move ITEM after ERROR and count the error against the campaign's run of errors."""
    fields = {"error_code": error.code[:64], "error_message": error.message[:2000]}
    if error.kind == "transient" and item.attempts < settings.CAMPAIGN_MAX_ATTEMPTS:
        backoff = error.retry_after if error.retry_after is not None else min(60.0, 2.0 ** min(item.attempts, 6))
        ratelimit.limiter().hold(str(campaign.connection_id), backoff)
        release_to = _unsent_status(campaign.pk)
        Delivery.move(item.id, from_status=Delivery.Status.SENDING, to_status=release_to, claimed_at=None, **fields)
        outcome.retried += 1
        outcome.reschedule_in = backoff
    elif error.kind == "ambiguous":
        Delivery.move(item.id, from_status=Delivery.Status.SENDING, to_status=Delivery.Status.UNKNOWN, **fields)
        outcome.unknown += 1
    else:
        Delivery.move(
            item.id,
            from_status=Delivery.Status.SENDING,
            to_status=Delivery.Status.FAILED,
            failed_at=timezone.now(),
            **fields,
        )
        outcome.failed += 1
    limit = settings.CAMPAIGN_MAX_CONSECUTIVE_ERRORS
    reason = f"Paused after {limit} provider errors in a row; the last one: {error}"
    if Campaign.record_provider_error(campaign.pk, limit=limit, reason=reason[:1000]):
        log.warning("[CAMPAIGN] %s paused after %d consecutive provider errors", campaign.pk, limit)
        outcome.stopped = "auto-paused"
        broadcast_stats_on_commit(campaign.pk)


class MediaUrl:
    """The campaign's media as the provider fetches it: a presigned URL, refreshed well
    before it expires."""

    def __init__(self, campaign: Campaign) -> None:
        self.asset = campaign.media
        self._value: Media | None = None
        self._at = 0.0

    def get(self) -> Media | None:
        if self.asset is None:
            return None
        if self._value is None or time.monotonic() - self._at > MEDIA_URL_REFRESH:
            url = default_storage.url(self.asset.key)
            if url.startswith("/"):
                url = settings.CAMPAIGN_MEDIA_BASE_URL.rstrip("/") + url
            self._value = Media(
                url=url,
                file_type=self.asset.file_type,
                mime_type=self.asset.mime_type,
                file_name=self.asset.original_name,
            )
            self._at = time.monotonic()
        return self._value


class _Run:
    """One `dispatch` run of one running campaign: its provider, media, rate budget and
    the timers of its heartbeat, live updates and pause checks."""

    def __init__(self, campaign: Campaign, slice_seconds: float) -> None:
        self.campaign = campaign
        self.provider: Provider = provider_for(campaign.connection)
        self.media = MediaUrl(campaign)
        self.limiter = ratelimit.limiter()
        self.outcome = Outcome()
        self.slice_seconds = slice_seconds
        self.started = self.last_beat = time.monotonic()
        # A success ends the campaign's run of errors; only write that when a run may exist.
        self.errors_seen = campaign.consecutive_errors > 0

    def loop(self) -> None:
        """Take budget, claim, send, record, until the slice ends or something stops it."""
        self.beat()
        while not self.slice_over():
            self.keep_alive()
            granted = self.budget()
            if granted is None:
                break
            if not granted:
                continue
            items = claim(self.campaign.pk, granted)
            if not items:
                if Campaign.finish_if_done(self.campaign.pk):
                    broadcast_stats_on_commit(self.campaign.pk)
                break
            if items[0].errors_before:
                self.errors_seen = True
            self.send_batch(items)
            broadcast_stats(self.campaign.pk)  # coalesced in campaigns.live: at most 4 frames/s
            if self.outcome.stopped:
                self.outcome.reschedule_in = None
                break
            if self.outcome.reschedule_in:  # a transient error put a hold on the connection
                break

    def slice_over(self) -> bool:
        if time.monotonic() - self.started > self.slice_seconds:
            self.outcome.reschedule_in = 0.0
            return True
        return False

    def beat(self) -> None:
        """Tell the stalled-campaign kick that a sender is on this campaign."""
        Campaign.objects.filter(pk=self.campaign.pk).update(dispatch_seen_at=timezone.now())
        self.last_beat = time.monotonic()

    def keep_alive(self) -> None:
        """The heartbeat every HEARTBEAT_SECONDS."""
        if time.monotonic() - self.last_beat > HEARTBEAT_SECONDS:
            self.beat()

    def budget(self) -> int | None:
        """How many sends the connection's rate allows now (0: slept, ask again); None when
        the wait is long enough to hand over to a delayed message instead."""
        connection = self.campaign.connection
        grant = self.limiter.acquire(
            str(connection.pk),
            limit=connection.rate_per_minute,
            window=ratelimit.window_seconds(),
            n=settings.CAMPAIGN_CLAIM_BATCH,
        )
        if grant.granted:
            return grant.granted
        if grant.wait > MAX_SLEEP:
            self.outcome.reschedule_in = grant.wait
            return None
        time.sleep(grant.wait)
        return 0

    def send_batch(self, items: list[Claimed]) -> None:
        """Send claimed ITEMS in order, then record the sends together (one counter update per
        batch); a worker killed before that leaves them in `sending`, later `unknown`: never
        sent twice. A pause, a stop or a transient error gives the rest back unsent."""
        campaign, outcome = self.campaign, self.outcome
        sent: dict[int, str] = {}
        checked_at = time.monotonic()
        for index, item in enumerate(items):
            # The claim checked the status; later items of a batch re-check it at most every
            # 0.3 s (not before each send: that query would cost as much as recording the
            # sends), so that a pause still stops new sends within a second.
            if time.monotonic() - checked_at > 0.3:
                if _stopped(campaign.pk):
                    release(campaign.pk, [i.id for i in items[index:]])
                    outcome.stopped = "stopped"
                    break
                checked_at = time.monotonic()
            message = OutgoingMessage(phone=item.phone, text=item.text, media=self.media.get())
            try:
                result = self.provider.send(message)
            except ProviderError as error:
                log.info("[CAMPAIGN] delivery %s: %s error %s", item.id, error.kind, error.code)
                record_failure(campaign, item, error, outcome)
                self.errors_seen = True
                if outcome.stopped or error.kind == "transient":
                    release(campaign.pk, [i.id for i in items[index + 1 :]])
                    break
                continue
            sent[item.id] = result.message_id
            outcome.sent += 1
            if self.errors_seen:
                Campaign.record_provider_success(campaign.pk)
                self.errors_seen = False
        record_sent(campaign.pk, campaign.tenant_id, sent)


def dispatch(campaign_id: UUID | str, *, slice_seconds: float = SLICE_SECONDS) -> Outcome:
    """Send the campaign's pending deliveries for up to SLICE_SECONDS. The outcome's
    `reschedule_in` says when the caller should run this again (None: no need)."""
    campaign = Campaign.objects.select_related("connection", "media").filter(pk=campaign_id).first()
    if campaign is None or campaign.status != Campaign.Status.RUNNING:
        return Outcome()
    connection = campaign.connection
    refusal = (
        provider_class(connection.provider).disabled_reason() if connection.is_active else "The connection is disabled."
    )
    if refusal:
        with transaction.atomic():
            campaign.pause(refusal)
            broadcast_stats_on_commit(campaign.pk)
        return Outcome()
    run = _Run(campaign, slice_seconds)
    run.loop()
    if run.outcome.reschedule_in is not None:
        Campaign.objects.filter(pk=campaign.pk).update(
            dispatch_seen_at=timezone.now() + timedelta(seconds=run.outcome.reschedule_in)
        )
    broadcast_stats(campaign.pk)
    return run.outcome


def _stopped(campaign_id: Any) -> bool:
    status = Campaign.objects.filter(pk=campaign_id).values_list("status", flat=True).first()
    return status != Campaign.Status.RUNNING
