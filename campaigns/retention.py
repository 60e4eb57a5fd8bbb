"""Bounded storage of raw webhook bodies: pruning by age, erasing those that carry a phone.

Every accepted webhook is stored raw (`WebhookEvent.body`) before it is applied. Once it is
processed or ignored its body is never read again; what the delivery log and modal show is
the per-delivery status history (`DeliveryEvent`), whose link to the event is SET_NULL, so
deleting bodies keeps it. Pending events are still to be applied and failed ones are kept
for diagnosis: neither is ever pruned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns import tracking
from campaigns.models import WebhookEvent
from sense.models import Tenant
from sense.ops import OpsFigure

log = logging.getLogger("sense.webhooks")

DONE = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED)
KEPT = (WebhookEvent.Status.PENDING, WebhookEvent.Status.FAILED)
PRUNE_BATCH = 1000


@dataclass
class PruneResult:
    deleted: int = 0
    kept_pending: int = 0  # pending or failed events older than the cutoff, kept

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _delete(ids: list[int]) -> int:
    """Delete the events IDS (their delivery events' link is set to NULL); returns how many."""
    # only("pk"): the deletion collector would otherwise load every body into memory.
    _, per_model = WebhookEvent.objects.filter(pk__in=ids).only("pk").delete()
    return per_model.get(WebhookEvent._meta.label, 0)


def webhook_events_prune(
    *, days: int | None = None, dry_run: bool = False, batch_size: int = PRUNE_BATCH, budget: float | None = None
) -> PruneResult:
    """Delete processed and ignored webhook events received more than DAYS ago (default
    WEBHOOK_RETENTION_DAYS), BATCH_SIZE rows per short transaction, so no lock is held for
    long; pending and failed ones are counted, never deleted. DRY_RUN counts what would go.
    BUDGET (seconds) stops after the batch that exceeds it: the next run goes on."""
    days = settings.WEBHOOK_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    old = WebhookEvent.objects.filter(received_at__lt=cutoff).order_by()
    result = PruneResult(kept_pending=old.filter(status__in=KEPT).count())
    done = old.filter(status__in=DONE)
    if dry_run:
        result.deleted = done.count()
        return result
    started = time.monotonic()
    while True:
        with transaction.atomic():
            # SKIP LOCKED: workers running the job at the same time take different rows.
            ids = list(done.select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch_size])
            if ids:
                result.deleted += _delete(ids)
        if len(ids) < batch_size or (budget is not None and time.monotonic() - started > budget):
            break
    if result.deleted:
        log.info(
            "[WEBHOOK] pruned %d stored event(s) older than %d day(s); %d pending or failed kept",
            result.deleted,
            days,
            result.kept_pending,
        )
    return result


def phone_digit_forms(phone: str) -> list[str]:
    """The digit strings under which PHONE (E.164) appears in provider payloads: its digits
    and, for Brazilian mobiles, the form without the ninth digit that WhatsApp ids of numbers
    registered before that digit was added still use (5511999990000 -> 551199990000)."""
    digits = re.sub(r"\D", "", phone)
    forms = [digits] if digits else []
    if len(digits) == 13 and digits.startswith("55") and digits[4] == "9":
        forms.append(digits[:4] + digits[5:])
    return forms


def webhook_events_with_phone(*, tenant: Tenant, phone: str) -> list[int]:
    """Ids of TENANT's stored webhook events whose raw body holds PHONE (any of its digit
    forms, not as part of a longer number), whatever their status."""
    forms = phone_digit_forms(phone)
    if not forms:
        return []
    pattern = rf"(^|[^0-9])({'|'.join(forms)})([^0-9]|$)"
    events = WebhookEvent.objects.filter(tenant=tenant, body__regex=pattern).order_by()
    return list(events.values_list("pk", flat=True))


def webhook_events_erase(ids: Iterable[int], *, batch_size: int = PRUNE_BATCH) -> int:
    """Delete the events IDS in batches, applying the pending ones first (their status
    changes still count; they are normally only milliseconds old); returns how many were
    deleted."""

    ids = list(ids)
    for event_id in WebhookEvent.objects.filter(pk__in=ids, status=WebhookEvent.Status.PENDING).values_list(
        "pk", flat=True
    ):
        tracking.process_event(event_id)  # a no-op for one a worker took meanwhile
    return sum(_delete(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size))


# --- Ops page ---------------------------------------------------------------------------------


def table_size_bytes() -> int | None:
    """The webhook events table's size on disk (with indexes and TOAST), all tenants; None
    where the database cannot tell."""
    table = WebhookEvent._meta.db_table
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [table])
            elif connection.vendor == "sqlite":
                cursor.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = %s", [table])
            else:
                return None
            row = cursor.fetchone()
    except Exception as exc:  # e.g. SQLite built without the dbstat table
        log.info("[WEBHOOK] table size unavailable: %s", exc.__class__.__name__)
        return None
    return int(row[0]) if row and row[0] is not None else None


def figures(tenant: Tenant, days: list[date]) -> list[OpsFigure]:
    retention = settings.WEBHOOK_RETENTION_DAYS
    stored = WebhookEvent.objects.filter(tenant=tenant).count()
    # A day of slack over the window: the job runs every few minutes, in every worker.
    overdue = WebhookEvent.objects.filter(
        tenant=tenant, status__in=DONE, received_at__lt=timezone.now() - timedelta(days=retention + 1)
    ).exists()
    size = table_size_bytes()
    return [
        OpsFigure(
            "webhooks_stored",
            _("Stored webhook bodies"),
            float(stored),
            "",
            _("none processed older than %(days)d days") % {"days": retention},
            not overdue,
        ),
        OpsFigure(
            "webhook_table_size",
            _("Webhook table size (all tenants)"),
            None if size is None else round(size / 1e6, 1),
            " MB",
        ),
    ]
