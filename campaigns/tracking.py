"""Delivery tracking: applying stored provider webhooks to deliveries, exactly once.

- Every accepted webhook is a `WebhookEvent` row first (written by the view). Processing
  claims it (pending -> processed) inside the transaction that applies it, so a second
  worker, the sweeper or a redelivered message finds nothing to do, and a crash rolls the
  claim back with the work. Workers and the sweeper take pending events in batches
  (`process_pending`, SELECT ... FOR UPDATE SKIP LOCKED); old messages and the events of a
  failed batch take one at a time (`process_event`, a conditional UPDATE). Both apply what
  they claimed the same way (`_apply_claimed`).
- What an event does to a delivery is `Delivery.status_change` (the status rule lives on
  the model); every change is written by `Delivery.move_locked`, so the campaign's
  counters change in the same transaction.
- Status events for a message id no delivery has recorded yet are kept as `PendingStatus`
  rows and applied by `apply_early_events` once the send records the id (or by the sweeper).
- The inbound messages and consent changes of the same events are applied in the same
  transaction by `campaigns.inbound` (the deliveries they answer locked with the others).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from campaigns import consent, inbound
from campaigns.live import broadcast_stats_on_commit
from campaigns.models import (
    STAGE_FIELDS,
    Delivery,
    DeliveryEvent,
    MessageTemplate,
    PendingStatus,
    WebhookEvent,
)
from campaigns.providers import StatusUpdate, TemplateUpdate, provider_class
from campaigns.providers.base import ConnectionState
from sense.lib import bulk

log = logging.getLogger("sense.webhooks")

TRACKED_FIELDS = (
    "id",
    "tenant_id",
    "campaign_id",
    "status",
    "provider_message_id",
    *STAGE_FIELDS[Delivery.Status.READ],
)
TRACKED_FIELDS += (
    "failed_at",
    "error_code",
    "error_message",
    "billable",
    "pricing_category",
    "replied_at",
    "contact_id",
)


def _by_tenant(keys: Iterable[tuple[UUID, str]]) -> dict[UUID, set[str]]:
    """(tenant id, provider message id) pairs grouped as tenant id -> message ids."""
    grouped: dict[UUID, set[str]] = {}
    for tenant_id, message_id in keys:
        grouped.setdefault(tenant_id, set()).add(message_id)
    return grouped


class Writes:
    """What applying updates to locked deliveries changes, written once at the end: each
    delivery one UPDATE, each campaign's counters one UPDATE (`Delivery.move_locked`), the
    history and early events one INSERT each. A batch of events shares one, made with the
    deliveries it locked up front (`lock_deliveries`)."""

    def __init__(self, locked: dict[tuple[UUID, str], Delivery] | None = None) -> None:
        self.locked = locked or {}
        self.moves: dict[int, tuple[Delivery, str, dict[str, Any]]] = {}
        self.history: list[DeliveryEvent] = []
        self.early: list[PendingStatus] = []
        self.campaigns: set[UUID] = set()
        # Deliveries that failed with a provider's "user stopped marketing messages": their
        # contacts are opted out once this batch commits (each in its own transaction, so a
        # batch never holds other campaigns' counter locks while it does that).
        self.opt_outs: set[int] = set()

    def move(self, delivery: Delivery, to_status: str, fields: dict[str, Any]) -> None:
        """Record DELIVERY moving to TO_STATUS with FIELDS, and apply it to the instance."""
        _, original, pending = self.moves.get(delivery.pk, (delivery, delivery.status, {}))
        pending.update(fields)
        self.moves[delivery.pk] = (delivery, original, pending)
        delivery.status = to_status
        for name, value in fields.items():
            setattr(delivery, name, value)

    def flush(self) -> None:
        if self.moves:
            Delivery.move_locked(
                [
                    (pk, delivery.campaign_id, original, delivery.status, fields)
                    for pk, (delivery, original, fields) in sorted(self.moves.items())
                ]
            )
        if self.history:
            bulk.insert(self.history)  # one JSON parameter: bulk_create's arrays cost more Python
        if self.early:
            PendingStatus.objects.bulk_create(self.early)
            # The send may record the id between our lookup and our commit; its own
            # apply_early_events then ran too early to see these rows. Looking again after our
            # commit closes that gap: one of the two always sees the other's committed write.
            for tenant_id, message_ids in _by_tenant((r.tenant_id, r.provider_message_id) for r in self.early).items():
                transaction.on_commit(partial(_apply_early_for_messages, tenant_id, message_ids))
        for campaign_id in self.campaigns:
            broadcast_stats_on_commit(campaign_id)
        if self.opt_outs:
            transaction.on_commit(partial(consent.contacts_opt_out_by_provider, delivery_ids=sorted(self.opt_outs)))
        self.moves, self.history, self.early, self.campaigns, self.opt_outs = {}, [], [], set(), set()


def apply_update(
    delivery: Delivery,
    update: StatusUpdate,
    *,
    received_at: datetime,
    webhook_event_id: int | None,
    writes: Writes,
) -> None:
    """Apply UPDATE to DELIVERY (locked by the caller, inside its transaction): its new state
    and its history row go to WRITES; the instance shows the new state at once, so the next
    update of the same delivery in the batch starts from it."""
    occurred_at = update.occurred_at or received_at
    new, fields = delivery.status_change(
        update.status, occurred_at, error_code=update.error_code, error_message=update.error_message
    )
    if delivery.status != Delivery.Status.CANCELLED:
        # Pricing rides on the status events (Cloud API); the last one given wins.
        if update.billable is not None and update.billable != delivery.billable:
            fields["billable"] = update.billable
        if update.pricing_category and update.pricing_category != delivery.pricing_category:
            fields["pricing_category"] = update.pricing_category[:32]
    if (
        update.error_code
        and fields.get("error_code") == update.error_code
        and update.error_code in Delivery.ERROR_ACTIONS.get("opt_out", ())
    ):
        writes.opt_outs.add(delivery.pk)
    if new is not None or fields:
        writes.move(delivery, new or delivery.status, fields)
    writes.history.append(
        DeliveryEvent(
            tenant_id=delivery.tenant_id,
            delivery_id=delivery.pk,
            webhook_event_id=webhook_event_id,
            status=update.status,
            occurred_at=occurred_at,
            received_at=received_at,
            event=update.event[:64],
            error_code=update.error_code[:64],
            error_message=update.error_message,
        )
    )
    writes.campaigns.add(delivery.campaign_id)


# --- Applying stored events -------------------------------------------------------------------


@dataclass
class Outcome:
    """What `process_event` did: the event's final status, or "skipped" when someone else
    had it."""

    status: str


def lock_deliveries(keys: Iterable[tuple[UUID, str]]) -> dict[tuple[UUID, str], Delivery]:
    """Lock the deliveries KEYS name ((tenant id, provider message id) pairs) in one statement,
    in id order, so concurrent batches never deadlock on each other; returns them by key."""
    by_tenant = _by_tenant(keys)
    if not by_tenant:
        return {}
    where = Q()
    for tenant_id, message_ids in by_tenant.items():
        where |= Q(tenant_id=tenant_id, provider_message_id__in=message_ids)
    locked: dict[tuple[UUID, str], Delivery] = {}
    for delivery in Delivery.objects.select_for_update().filter(where).only(*TRACKED_FIELDS).order_by("pk"):
        locked.setdefault((delivery.tenant_id, str(delivery.provider_message_id)), delivery)
    return locked


def apply_updates(
    tenant_id: UUID,
    connection_id: UUID,
    updates: Sequence[StatusUpdate],
    *,
    received_at: datetime,
    webhook_event_id: int | None = None,
    writes: Writes | None = None,
) -> None:
    """Apply UPDATES for one tenant inside the caller's transaction. Unknown message ids
    become PendingStatus rows. Deliveries are locked up front in id order, so concurrent
    events never deadlock on each other. A batch passes its WRITES, holding the deliveries
    it locked, and flushes them itself; without, this locks and writes before returning."""
    own = writes is None
    if writes is None:
        writes = Writes(lock_deliveries((tenant_id, u.message_id) for u in updates))
    for update in updates:
        match = writes.locked.get((tenant_id, update.message_id))
        if match is None:
            writes.early.append(
                PendingStatus(
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    webhook_event_id=webhook_event_id,
                    provider_message_id=update.message_id[:128],
                    status=update.status,
                    occurred_at=update.occurred_at or received_at,
                    received_at=received_at,
                    event=update.event[:64],
                    error_code=update.error_code[:64],
                    error_message=update.error_message,
                    billable=update.billable,
                    pricing_category=update.pricing_category[:32],
                )
            )
            continue
        apply_update(match, update, received_at=received_at, webhook_event_id=webhook_event_id, writes=writes)
    if own:
        writes.flush()


_EVENT_FIELDS = ("id", "tenant_id", "connection_id", "provider", "event_type", "body", "received_at")


def _claim(events: QuerySet[WebhookEvent]) -> int:
    """Mark EVENTS processed, inside the transaction that applies them; returns how many."""
    return events.update(
        status=WebhookEvent.Status.PROCESSED, processed_at=timezone.now(), attempts=F("attempts") + 1, error=""
    )


def _apply_claimed(events: Sequence[WebhookEvent]) -> None:
    """Apply EVENTS, claimed by the caller in its transaction: every delivery they name
    (by a status, or answered by an inbound message) locked in one statement, every change
    written once at the end; then the inbound messages (`campaigns.inbound`) and consent
    changes they carry. Connection states and template status news are applied first."""
    parsed = [(event, provider_class(event.provider).parse_webhook(event.body, event.event_type)) for event in events]
    for event, p in parsed:
        if p.connection_state is not None:
            _apply_connection_state(event, p.connection_state)
        if p.templates:
            apply_template_updates(event.connection_id, p.templates)
    replies = inbound.plan([(event, m) for event, p in parsed for m in p.messages])
    keys = [(event.tenant_id, u.message_id) for event, p in parsed for u in p.statuses]
    writes = Writes(lock_deliveries([*keys, *replies.delivery_keys]))
    for event, p in parsed:
        apply_updates(
            event.tenant_id,
            event.connection_id,
            p.statuses,
            received_at=event.received_at,
            webhook_event_id=event.pk,
            writes=writes,
        )
    writes.flush()
    inbound.apply(replies, writes.locked)
    for event, p in parsed:
        if p.consents:
            inbound.apply_consents(event.tenant_id, p.consents)


def apply_template_updates(connection_id: UUID, updates: Sequence[TemplateUpdate]) -> None:
    """Apply a provider's template status and quality news to CONNECTION_ID's templates (by
    the provider's id, else name and language; unknown ones are skipped: the next sync
    brings them), pausing the campaigns of a template that stops being sendable, inside the
    caller's transaction."""
    for update in updates:
        templates = MessageTemplate.objects.select_for_update().filter(connection_id=connection_id)
        found = templates.filter(meta_id=update.template_id).first() if update.template_id else None
        if found is None and update.name:
            found = templates.filter(name=update.name, language=update.language).first()
        if found is None:
            log.info("[WEBHOOK] template news for an unknown template %s of connection %s", update.name, connection_id)
            continue
        if found.apply_change(status=update.status, reason=update.reason, quality=update.quality):
            log.info("[WEBHOOK] template %s of connection %s is now %s", found.name, connection_id, found.status)
            for campaign_id in found.pause_campaigns():
                log.warning("[CAMPAIGN] %s paused: its template %s is %s", campaign_id, found.name, found.status)
                broadcast_stats_on_commit(campaign_id)


def _apply_connection_state(event: WebhookEvent, report: ConnectionState) -> None:
    from campaigns.pacing import connection_state_apply

    connection_state_apply(
        connection_id=event.connection_id,
        state=report.state,
        reason=report.reason,
        occurred_at=report.occurred_at or event.received_at,
    )


def process_event(event_id: int) -> Outcome:
    """Claim and apply one stored webhook event. Idempotent: an event already processed (or
    being processed by someone else, who holds the row) is skipped. Transient database errors
    are recorded and re-raised for a retry; anything else marks the event failed."""
    try:
        with transaction.atomic():
            if not _claim(WebhookEvent.objects.filter(pk=event_id, status=WebhookEvent.Status.PENDING)):
                return Outcome(status="skipped")
            _apply_claimed([WebhookEvent.objects.only(*_EVENT_FIELDS).get(pk=event_id)])
            return Outcome(status=WebhookEvent.Status.PROCESSED)
    except OperationalError as exc:
        _record_failure(event_id, exc, final=False)
        raise
    except Exception as exc:
        _record_failure(event_id, exc, final=True)
        log.exception("[WEBHOOK] event %s failed", event_id)
        return Outcome(status=WebhookEvent.Status.FAILED)


def process_pending(*, limit: int = 200) -> int:
    """Claim up to LIMIT pending events, oldest first, skipping rows another worker holds,
    and apply them in one transaction: one commit, one lock statement and one write per
    delivery and per campaign for the whole batch, where one event at a time costs all of
    that per event. If the batch fails, it is rolled back and its events are processed one by
    one (`process_event`): a bad event is marked failed alone, and a database error counts
    against each event's attempts (and is raised for a retry) instead of failing the whole
    batch again and again. Returns how many events were claimed."""
    fallback: list[int] = []
    with transaction.atomic():
        events = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookEvent.Status.PENDING)
            .order_by("received_at", "pk")
            .only(*_EVENT_FIELDS)[:limit]
        )
        if not events:
            return 0
        ids = [event.pk for event in events]
        try:
            with transaction.atomic():
                _claim(WebhookEvent.objects.filter(pk__in=ids))
                _apply_claimed(events)
        except Exception as exc:
            log.warning(
                "[WEBHOOK] a batch of %d event(s) failed (%s); processing them one by one",
                len(ids),
                exc.__class__.__name__,
            )
            fallback = ids
    for event_id in fallback:
        process_event(event_id)
    return len(events)


def process_all_pending(*, limit: int = 200, budget: float = 10.0) -> int:
    """`process_pending` in this thread until nothing is pending or BUDGET seconds have
    passed; returns how many. Unlike `drain_pending` (what a wake-up runs, one thread per
    process) it does not defer to a drain already running, so a caller that needs every
    stored event applied before it goes on (a test, a shell) gets that."""
    deadline = time.monotonic() + budget
    total = 0
    while True:
        claimed = process_pending(limit=limit)
        total += claimed
        if claimed < limit or time.monotonic() > deadline:
            return total


class _Drainer:
    """Whether a thread of this process is applying pending events (`drain_pending`), and
    whether a wake-up came since it last looked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = False
        self.wanted = False


_drainer = _Drainer()


def drain_pending(*, limit: int = 200, budget: float = 10.0, interval: float | None = None) -> bool:
    """What a worker's wake-up runs: apply pending events in batches while they keep coming,
    at most one batch per INTERVAL (WEBHOOK_BATCH_INTERVAL_SECONDS) unless a full batch is
    waiting, by one thread per worker process. A wake-up while that thread runs only tells it
    to look again before it stops, so a storm's wake-ups cost no extra batches (which, taken
    every few milliseconds by several threads at once, cost the worker and PostgreSQL more
    per event than the events themselves). The thread stops when a look finds nothing and no
    wake-up came since it started that look, or after BUDGET seconds; returns True if it
    stopped at its budget with events still coming (the caller wakes a worker again)."""
    interval = settings.WEBHOOK_BATCH_INTERVAL_SECONDS if interval is None else interval
    state = _drainer
    with state.lock:
        state.wanted = True
        if state.running:
            return False
        state.running = True
    deadline = time.monotonic() + budget
    try:
        while True:
            with state.lock:
                if not state.wanted:
                    state.running = False
                    return False
                state.wanted = False
            while claimed := process_pending(limit=limit):
                if time.monotonic() > deadline:
                    with state.lock:
                        state.running = False
                    return True
                if claimed < limit:
                    time.sleep(interval)
    except BaseException:
        with state.lock:
            state.running = False
        raise


def _record_failure(event_id: int, exc: Exception, *, final: bool) -> None:
    max_attempts = settings.WEBHOOK_MAX_ATTEMPTS
    error = f"{exc.__class__.__name__}: {exc}"[:1000]
    qs = WebhookEvent.objects.filter(pk=event_id, status=WebhookEvent.Status.PENDING)
    try:
        qs.update(attempts=F("attempts") + 1, error=error)
        # Past the limit it stays visible as failed instead of being retried forever.
        if not final:
            qs = qs.filter(attempts__gte=max_attempts)
        qs.update(status=WebhookEvent.Status.FAILED, processed_at=timezone.now())
    except Exception:
        log.warning("[WEBHOOK] could not record the failure of event %s", event_id)


# --- Early events ------------------------------------------------------------------------


def apply_early_events(delivery_id: int) -> int:
    """Apply status events that arrived before DELIVERY_ID's provider message id was
    recorded; returns how many. Call it after the transaction recording the id commits.
    Safe to call any number of times, concurrently: each early event is applied once."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().only(*TRACKED_FIELDS).filter(pk=delivery_id).first()
        if delivery is None or not delivery.provider_message_id:
            return 0
        rows = list(
            PendingStatus.objects.select_for_update(skip_locked=True)
            .filter(tenant_id=delivery.tenant_id, provider_message_id=delivery.provider_message_id)
            .order_by("occurred_at", "pk")
        )
        if not rows:
            return 0
        writes = Writes()
        for row in rows:
            apply_update(
                delivery,
                StatusUpdate(
                    message_id=row.provider_message_id,
                    status=row.status,
                    occurred_at=row.occurred_at,
                    error_code=row.error_code,
                    error_message=row.error_message,
                    event=row.event,
                    billable=row.billable,
                    pricing_category=row.pricing_category,
                ),
                received_at=row.received_at,
                webhook_event_id=row.webhook_event_id,
                writes=writes,
            )
        writes.flush()
        PendingStatus.objects.filter(pk__in=[row.pk for row in rows]).delete()
    log.info("[WEBHOOK] applied %d early status event(s) to delivery %s", len(rows), delivery_id)
    return len(rows)


def _apply_early_for_messages(tenant_id: UUID, message_ids: set[str]) -> int:
    delivery_ids = Delivery.objects.filter(tenant_id=tenant_id, provider_message_id__in=message_ids).values_list(
        "pk", flat=True
    )
    return sum(apply_early_events(pk) for pk in delivery_ids)


# --- Sweeper ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    events: int = 0
    early: int = 0
    expired: int = 0


def sweep(*, grace: float | None = None, limit: int = 1000) -> SweepResult:
    """Process stored events nobody processed (the broker was down, a worker died), apply
    early events whose message id has since been recorded, and drop early events too old
    to ever match. Runs in every worker; claims make concurrent sweeps harmless."""
    result = SweepResult()
    grace = settings.WEBHOOK_SWEEP_GRACE_SECONDS if grace is None else grace
    cutoff = timezone.now() - timedelta(seconds=grace)
    # When anything is stale (after a broker outage there can be many thousands), take the
    # pending events oldest first in batches, as a woken worker does; fresher ones that come
    # with them are harmless to take, since claims skip whatever another worker holds.
    if WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING, received_at__lte=cutoff).exists():
        while result.events < limit:
            batch = min(200, limit - result.events)
            try:
                claimed = process_pending(limit=batch)
            except OperationalError:
                log.warning("[WEBHOOK] a sweep batch will be retried")
                break
            result.events += claimed
            if claimed < batch:
                break

    matched = Delivery.objects.filter(
        tenant_id=OuterRef("tenant_id"), provider_message_id=OuterRef("provider_message_id")
    )
    keys = (
        PendingStatus.objects.filter(Exists(matched)).values_list("tenant_id", "provider_message_id").distinct()[:limit]
    )
    for tenant_id, message_ids in _by_tenant(keys).items():
        result.early += _apply_early_for_messages(tenant_id, message_ids)

    ttl = timezone.now() - timedelta(hours=settings.WEBHOOK_EARLY_EVENT_TTL_HOURS)
    result.expired, _ = PendingStatus.objects.filter(received_at__lt=ttl).delete()
    if result.events or result.early or result.expired:
        log.info(
            "[WEBHOOK] sweep: %d stored event(s) processed, %d early event(s) applied, %d expired",
            result.events,
            result.early,
            result.expired,
        )
    return result
