"""Inbound messages: what happens when a contact writes to one of the tenant's connections.

Stored webhook events are applied in batches by `campaigns.tracking` (one transaction per
batch); the inbound messages they carry are applied here, in two steps of that
transaction:

1. `plan` (reads and contact inserts, before any delivery is locked): drop messages
   already stored (unique per connection and provider message id: a duplicate is a
   no-op), find or create each sender's contact (source `inbound`, the profile name as
   its name) and pick the delivery each message answers: the one it quotes, else the
   contact's latest delivery sent on that connection within REPLY_ATTRIBUTION_HOURS. The
   batch then locks those deliveries together with the ones its statuses change, in one
   statement in id order (`tracking.lock_deliveries`), so batches never deadlock.
2. `apply` (deliveries locked): insert the messages, give each delivery its first reply
   (`replied_at`, and `stat_replied` of its campaign in the same transaction: one UPDATE
   per batch for the deliveries, one per campaign for the counters), act on opt-out and
   re-subscribe keywords, and, on commit, fetch attachments and send live frames.

The actors (campaigns/tasks.py) call `inbound_media_fetch` and `consent_confirmation_send`;
consent changes go through `campaigns.consent` (this module must not import services).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import dramatiq
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from campaigns import ratelimit
from campaigns.consent import contact_consent_change
from campaigns.live import broadcast_stats_on_commit
from campaigns.models import (
    Campaign,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    Delivery,
    InboundMessage,
    WebhookEvent,
)
from campaigns.providers import OutgoingMessage, ProviderError, provider_for
from campaigns.providers.base import ConsentUpdate, InboundUpdate
from media import proxy, sniff
from media import services as media_services
from media.models import Asset
from sense import realtime
from sense.errors import ServiceError, Unavailable
from sense.models import Tenant

log = logging.getLogger("sense.inbound")

FRAME = "inbound.message"


# --- Planning (before the batch locks deliveries) ----------------------------------------------


@dataclass
class Planned:
    event: WebhookEvent
    update: InboundUpdate
    received_at: datetime
    contact_id: int | None = None
    delivery: Delivery | None = None  # the one it answers (not locked yet)


@dataclass
class Plan:
    messages: list[Planned] = field(default_factory=list)

    @property
    def delivery_keys(self) -> list[tuple[UUID, str]]:
        """(tenant id, provider message id) of every delivery answered, for the batch's lock."""
        return [
            (p.event.tenant_id, str(p.delivery.provider_message_id))
            for p in self.messages
            if p.delivery is not None and p.delivery.provider_message_id
        ]


def plan(items: Sequence[tuple[WebhookEvent, InboundUpdate]]) -> Plan:
    """What applying ITEMS (inbound messages of claimed events) will do; creates the
    contacts they need. Reads only, apart from those inserts."""
    fresh: dict[tuple[UUID, str], Planned] = {}
    for event, update in items:
        key = (event.connection_id, update.message_id)
        if key not in fresh:
            fresh[key] = Planned(event, update, update.occurred_at or event.received_at)
    if not fresh:
        return Plan()
    by_connection: dict[UUID, list[str]] = {}
    for connection_id, message_id in fresh:
        by_connection.setdefault(connection_id, []).append(message_id)
    where = Q()
    for connection_id, message_ids in by_connection.items():
        where |= Q(connection_id=connection_id, provider_message_id__in=message_ids)
    for key in InboundMessage.objects.filter(where).values_list("connection_id", "provider_message_id"):
        fresh.pop(key, None)
    result = Plan(list(fresh.values()))
    _contacts(result.messages)
    _attribute(result.messages)
    return result


def _contacts(messages: list[Planned]) -> None:
    """Each message's contact by (tenant, phone), creating those not known yet."""
    wanted: dict[UUID, dict[str, str]] = {}
    for p in messages:
        if p.update.phone:
            names = wanted.setdefault(p.event.tenant_id, {})
            if not names.get(p.update.phone):
                names[p.update.phone] = p.update.profile_name
    found: dict[tuple[UUID, str], int] = {}
    for tenant_id, names in wanted.items():
        known = dict(Contact.objects.filter(tenant_id=tenant_id, phone__in=list(names)).values_list("phone", "pk"))
        missing = sorted(set(names) - set(known))  # in one order: concurrent batches wait, never deadlock
        if missing:
            Contact.objects.bulk_create(
                [
                    Contact(tenant_id=tenant_id, phone=phone, name=names[phone].strip(), source=Contact.Source.INBOUND)
                    for phone in missing
                ],
                ignore_conflicts=True,  # another batch may create the same contact meanwhile
            )
            known.update(Contact.objects.filter(tenant_id=tenant_id, phone__in=missing).values_list("phone", "pk"))
            log.info("[INBOUND] %d contact(s) created from inbound messages for tenant %s", len(missing), tenant_id)
        found.update({(tenant_id, phone): pk for phone, pk in known.items()})
    for p in messages:
        p.contact_id = found.get((p.event.tenant_id, p.update.phone)) if p.update.phone else None


_DELIVERY_FIELDS = ("id", "tenant_id", "campaign_id", "contact_id", "connection_id", "provider_message_id", "sent_at")


def _attribute(messages: list[Planned]) -> None:
    """The delivery each message answers: the one it quotes (any of the tenant's), else the
    contact's latest one sent on the receiving connection within REPLY_ATTRIBUTION_HOURS
    before the message."""
    quoted: dict[UUID, set[str]] = {}
    for p in messages:
        if p.update.quoted_id:
            quoted.setdefault(p.event.tenant_id, set()).add(p.update.quoted_id)
    by_id: dict[tuple[UUID, str], Delivery] = {}
    for tenant_id, ids in quoted.items():
        for delivery in Delivery.objects.filter(tenant_id=tenant_id, provider_message_id__in=ids).only(
            *_DELIVERY_FIELDS
        ):
            by_id.setdefault((tenant_id, str(delivery.provider_message_id)), delivery)
    for p in messages:
        p.delivery = by_id.get((p.event.tenant_id, p.update.quoted_id)) if p.update.quoted_id else None

    hours = settings.REPLY_ATTRIBUTION_HOURS
    rest = [p for p in messages if p.delivery is None and p.contact_id is not None]
    if not rest or hours <= 0:
        return
    window = timedelta(hours=hours)
    since = min(p.received_at for p in rest) - window
    candidates: dict[int, list[Delivery]] = {}
    recent = (
        Delivery.objects.filter(contact_id__in={p.contact_id for p in rest}, sent_at__gte=since)
        .exclude(provider_message_id=None)
        .only(*_DELIVERY_FIELDS)
        .order_by("-sent_at", "-pk")
    )
    for delivery in recent:
        candidates.setdefault(delivery.contact_id or 0, []).append(delivery)
    campaign_ids = {d.campaign_id for ds in candidates.values() for d in ds}
    campaign_connections = dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "connection_id"))
    for p in rest:
        for delivery in candidates.get(p.contact_id or 0, []):
            # Deliveries of campaigns rotating numbers say which one they went out on.
            sent_on = delivery.connection_id or campaign_connections.get(delivery.campaign_id)
            sent_at = delivery.sent_at
            if sent_on == p.event.connection_id and sent_at and p.received_at - window <= sent_at <= p.received_at:
                p.delivery = delivery
                break


# --- Applying (deliveries locked) ------------------------------------------------------------


def apply(plan: Plan, locked: dict[tuple[UUID, str], Delivery]) -> list[InboundMessage]:
    """Insert PLAN's messages and do what they mean, inside the batch's transaction; LOCKED
    holds the answered deliveries, locked by the batch. Returns the messages inserted."""
    if not plan.messages:
        return []
    rows = []
    for p in plan.messages:
        u = p.update
        delivery = locked.get((p.event.tenant_id, str(p.delivery.provider_message_id))) if p.delivery else None
        media_info = u.media.as_info() if u.media else {}
        rows.append(
            InboundMessage(
                tenant_id=p.event.tenant_id,
                connection_id=p.event.connection_id,
                contact_id=p.contact_id,
                delivery=delivery,
                campaign_id=delivery.campaign_id if delivery else None,
                webhook_event_id=p.event.pk,
                provider_message_id=u.message_id,
                type=u.type,
                text=u.text,
                phone=u.phone,
                wa_user_id=u.wa_user_id,
                profile_name=u.profile_name,
                quoted_provider_message_id=u.quoted_id,
                media_status=InboundMessage.MediaStatus.PENDING if u.media else InboundMessage.MediaStatus.NONE,
                media_info=media_info,
                received_at=p.received_at,
            )
        )
    # A concurrent batch holding the same message (a provider's redelivery) wins; ours is
    # then skipped. Reading back by event id finds exactly the rows this batch inserted.
    InboundMessage.objects.bulk_create(rows, ignore_conflicts=True)
    created = list(
        InboundMessage.objects.filter(webhook_event_id__in={p.event.pk for p in plan.messages}).order_by(
            "received_at", "pk"
        )
    )
    _record_replies(created, locked)
    _keywords(created)
    for message in created:
        if message.media_status == InboundMessage.MediaStatus.PENDING:
            transaction.on_commit(partial(_enqueue_media, message.pk))
        _broadcast_on_commit(message)
    return created


def _record_replies(created: list[InboundMessage], locked: dict[tuple[UUID, str], Delivery]) -> None:
    """Give each answered delivery its first reply's time: one UPDATE for every delivery,
    one counter UPDATE per campaign that gains replies (the deliveries are locked, so
    which ones had none yet is exact)."""
    by_pk = {d.pk: d for d in locked.values()}
    first: dict[int, datetime] = {}
    for message in created:
        delivery = by_pk.get(message.delivery_id) if message.delivery_id else None
        if delivery is None:
            continue
        current = first.get(delivery.pk, delivery.replied_at)
        if current is None or message.received_at < current:
            first[delivery.pk] = message.received_at
    if not first:
        return
    gained: dict[Any, int] = {}
    for pk in first:
        delivery = by_pk[pk]
        if delivery.replied_at is None:
            gained[delivery.campaign_id] = gained.get(delivery.campaign_id, 0) + 1
        delivery.replied_at = first[pk]
    Delivery.objects.filter(pk__in=list(first)).update(
        replied_at=Case(*(When(pk=pk, then=Value(at)) for pk, at in first.items())), updated_at=timezone.now()
    )
    for campaign_id in sorted(gained, key=str):
        Campaign.add_to_stats(campaign_id, {"replied": gained[campaign_id]})
        broadcast_stats_on_commit(campaign_id)


def _keywords(created: list[InboundMessage]) -> None:
    """Opt out (or back in) the contacts whose whole message is one of their tenant's
    keywords; a confirmation, when the tenant wrote one, goes back on commit."""
    settings_by_tenant: dict[UUID, ConsentSettings] = {}
    # Contacts in id order (each one's messages in time order): two batches locking the
    # same contacts lock them in the same order.
    for message in sorted(created, key=lambda m: (m.contact_id or 0, m.received_at, m.pk)):
        if message.contact_id is None or not message.text or len(message.text) > 64:
            continue
        tenant_settings = settings_by_tenant.get(message.tenant_id)
        if tenant_settings is None:
            tenant = Tenant.objects.get(pk=message.tenant_id)
            tenant_settings = settings_by_tenant[message.tenant_id] = ConsentSettings.for_tenant(tenant)
        opted_out = tenant_settings.match(message.text)
        if opted_out is None:
            continue
        contact = Contact.objects.select_related("tenant").get(pk=message.contact_id)
        changed = contact_consent_change(
            contact=contact, opted_out=opted_out, source=ConsentEvent.Source.KEYWORD, inbound=message
        )
        reply = tenant_settings.opt_out_reply if opted_out else tenant_settings.opt_in_reply
        if changed and reply.strip():
            event_id = (
                ConsentEvent.objects.filter(contact_id=contact.pk, inbound=message).values_list("pk", flat=True).first()
            )
            if event_id is not None:
                ConsentEvent.objects.filter(pk=event_id).update(confirmation=ConsentEvent.Confirmation.QUEUED)
                transaction.on_commit(partial(_enqueue_confirmation, event_id))


def apply_consents(tenant_id: UUID, consents: Sequence[ConsentUpdate]) -> int:
    """A provider's own opt-outs and re-subscriptions (Cloud's `user_preferences`) for the
    tenant's contacts with those phones, with source `provider`. Returns how many changed."""
    phones = {c.phone for c in consents if c.phone}
    if not phones:
        return 0
    contacts = {
        c.phone: c for c in Contact.objects.filter(tenant_id=tenant_id, phone__in=phones).select_related("tenant")
    }
    changed = 0
    for consent in sorted(consents, key=lambda c: c.occurred_at or timezone.now()):
        contact = contacts.get(consent.phone)
        if contact is None:
            continue
        reason = "The person stopped marketing messages on WhatsApp." if consent.opted_out else ""
        if contact_consent_change(
            contact=contact, opted_out=consent.opted_out, source=ConsentEvent.Source.PROVIDER, reason=reason
        ):
            changed += 1
            contact.opted_out = consent.opted_out
    return changed


# The actors (campaigns/tasks.py), looked up by name: campaigns.tasks imports campaigns.tracking,
# which imports this module, so this module must not import it back.
MEDIA_ACTOR = "fetch_inbound_media"
CONFIRMATION_ACTOR = "send_consent_confirmation"


def _actor(name: str) -> Any:
    return dramatiq.get_broker().get_actor(name)


def _broadcast_on_commit(message: InboundMessage) -> None:
    """The `inbound.message` frame of MESSAGE to its tenant's socket, once committed."""
    frame = {
        "type": FRAME,
        "contact_id": message.contact_id,
        "campaign_id": str(message.campaign_id) if message.campaign_id else None,
        "id": message.pk,
    }
    transaction.on_commit(partial(realtime.broadcast, message.tenant_id, frame))


def _enqueue_media(inbound_id: int) -> None:
    try:
        _actor(MEDIA_ACTOR).send(inbound_id)
    except Exception as exc:  # the sweeper sends it again
        log.warning("[INBOUND] media job for message %s not sent: %s", inbound_id, exc.__class__.__name__)


def _enqueue_confirmation(consent_event_id: int) -> None:
    try:
        _actor(CONFIRMATION_ACTOR).send(consent_event_id)
    except Exception as exc:
        log.warning("[CONSENT] confirmation %s not sent: %s", consent_event_id, exc.__class__.__name__)


# --- The confirmation text ---------------------------------------------------------------------


@dataclass
class ConfirmationOutcome:
    status: str  # sent | failed | skipped | retry
    retry_in: float | None = None


def consent_confirmation_send(*, consent_event_id: int) -> ConfirmationOutcome:
    """Send the confirmation of one keyword consent change through the connection that
    received the keyword, within that connection's rate limit. Claimed (queued -> sending)
    first, so it goes out at most once; a transient failure or no budget yet puts it back
    (RETRY, with the wait) for the actor to try again."""
    event = (
        ConsentEvent.objects.select_related("tenant", "contact", "inbound__connection")
        .filter(pk=consent_event_id)
        .first()
    )
    if event is None or event.inbound is None or event.confirmation != ConsentEvent.Confirmation.QUEUED:
        return ConfirmationOutcome("skipped")
    connection: Connection = event.inbound.connection
    tenant_settings = ConsentSettings.for_tenant(event.tenant)
    text = (tenant_settings.opt_out_reply if event.opted_out else tenant_settings.opt_in_reply).strip()
    queued = ConsentEvent.objects.filter(pk=event.pk, confirmation=ConsentEvent.Confirmation.QUEUED)
    if not text or not connection.is_active or provider_for(connection).disabled_reason():
        queued.update(confirmation=ConsentEvent.Confirmation.FAILED)
        return ConfirmationOutcome("skipped")
    grant = ratelimit.limiter().acquire(
        str(connection.pk), limit=connection.rate_per_minute, window=ratelimit.window_seconds(), n=1
    )
    if not grant.granted:
        return ConfirmationOutcome("retry", retry_in=grant.wait)
    if not queued.update(confirmation=ConsentEvent.Confirmation.SENDING):
        return ConfirmationOutcome("skipped")  # someone else sent it, or is sending it
    try:
        provider_for(connection).send(OutgoingMessage(phone=event.contact.phone, text=text))
    except ProviderError as exc:
        mine = ConsentEvent.objects.filter(pk=event.pk, confirmation=ConsentEvent.Confirmation.SENDING)
        if exc.transient:
            mine.update(confirmation=ConsentEvent.Confirmation.QUEUED)
            log.info("[CONSENT] confirmation %s will be retried: %s", event.pk, exc)
            return ConfirmationOutcome("retry", retry_in=exc.retry_after or 5.0)
        mine.update(confirmation=ConsentEvent.Confirmation.FAILED)
        log.warning("[CONSENT] confirmation %s failed: %s", event.pk, exc)
        return ConfirmationOutcome("failed")
    ConsentEvent.objects.filter(pk=event.pk).update(confirmation=ConsentEvent.Confirmation.SENT)
    log.info("[CONSENT] confirmation %s sent through connection %s", event.pk, connection.pk)
    return ConfirmationOutcome("sent")


# --- Attachments -------------------------------------------------------------------------------

# Pending attachments whose job the broker lost are sent again after this long; attachments
# still not stored after MEDIA_GIVE_UP are unavailable (a provider's media URLs expire).
MEDIA_RESEND_AFTER = timedelta(minutes=2)
MEDIA_GIVE_UP = timedelta(hours=1)


class _Retry(Exception):
    """The attachment could not be fetched for a reason that may pass (the job retries)."""


def inbound_media_fetch(*, inbound_id: int) -> str:
    """Fetch one inbound message's attachment into its tenant's media library (an asset of
    origin `inbound`, thumbnailed like an upload) with the media proxy's defences: private
    addresses refused unless trusted, a size cap while streaming, the type decided by the
    content. Claimed first (pending -> fetching). Returns "stored", "unavailable" (the
    message says so; its text was never held up) or "skipped"; raises for a retry when the
    provider or storage fails for a while (the message is pending again)."""
    claimed = InboundMessage.objects.filter(pk=inbound_id, media_status=InboundMessage.MediaStatus.PENDING).update(
        media_status=InboundMessage.MediaStatus.FETCHING
    )
    if not claimed:
        return "skipped"
    message = InboundMessage.objects.select_related("tenant", "connection", "webhook_event").get(pk=inbound_id)
    mine = InboundMessage.objects.filter(pk=inbound_id, media_status=InboundMessage.MediaStatus.FETCHING)
    try:
        asset = _store_media(message)
    except _Retry as exc:
        mine.update(media_status=InboundMessage.MediaStatus.PENDING)
        log.info("[INBOUND] attachment of message %s will be retried: %s", inbound_id, exc)
        raise
    except Exception as exc:
        mine.update(media_status=InboundMessage.MediaStatus.UNAVAILABLE)
        reason = exc.message if isinstance(exc, ProviderError | ServiceError) else exc.__class__.__name__
        log.warning("[INBOUND] attachment of message %s unavailable: %s", inbound_id, reason)
        return "unavailable"
    with transaction.atomic():
        if not mine.update(media=asset, media_status=InboundMessage.MediaStatus.STORED):
            return "skipped"  # given up on meanwhile; the asset stays in the library
        _broadcast_on_commit(message)
    log.info("[INBOUND] attachment of message %s stored as asset %s", inbound_id, asset.pk)
    return "stored"


def _store_media(message: InboundMessage) -> Asset:
    provider = provider_for(message.connection)
    body = message.webhook_event.body if message.webhook_event is not None else ""
    try:
        source = provider.media_source(message.media_info, body=body, message_id=message.provider_message_id)
    except ProviderError as exc:
        if exc.transient:
            raise _Retry(str(exc)) from None
        raise
    limit = max(media_services.upload_limits().values())
    if source.data is not None:
        data = source.data
        if len(data) > limit:
            raise ServiceError(f"The attachment is larger than {limit} bytes.", code="too_large", status=413)
    else:
        try:
            fetched = proxy.fetch(source.url, headers=source.headers, max_bytes=limit, any_type=True)
        except proxy.ProxyError as exc:
            if exc.status in (502, 504):
                raise _Retry(exc.message) from None
            raise
        if fetched.status != 200:
            raise ServiceError("The provider no longer has the attachment.", code="gone", status=404)
        data = fetched.body
    name = _file_name(message, data)
    try:
        return media_services.asset_create(
            tenant=message.tenant,
            user=None,
            upload=io.BytesIO(data),
            name=name,
            size=len(data),
            origin=Asset.Origin.INBOUND,
        )
    except Unavailable as exc:
        raise _Retry(exc.message) from None


def _file_name(message: InboundMessage, data: bytes) -> str:
    """The provider's file name when its extension fits the content, else one made of the
    message's type and id with the content's extension."""
    given = str(message.media_info.get("file_name") or "")
    mime = sniff.detect(io.BytesIO(data), given)
    extensions = sniff.TYPES[mime][1] if mime in sniff.TYPES else ()
    if given and sniff.extension(given) in extensions:
        return given
    stem = given.rpartition(".")[0] if "." in given else given
    stem = stem or f"{message.type}-{message.provider_message_id[-16:]}"
    return f"{stem}.{extensions[0]}" if extensions else stem


def inbound_media_sweep(*, now: datetime | None = None) -> int:
    """Send the job again for attachments pending longer than MEDIA_RESEND_AFTER (the broker
    lost it), and mark unavailable those still not stored after MEDIA_GIVE_UP (a worker
    died while fetching). Returns how many jobs were sent."""
    now = now or timezone.now()
    S = InboundMessage.MediaStatus
    InboundMessage.objects.filter(media_status__in=[S.PENDING, S.FETCHING], created_at__lt=now - MEDIA_GIVE_UP).update(
        media_status=S.UNAVAILABLE
    )
    stale = InboundMessage.objects.filter(media_status=S.PENDING, created_at__lt=now - MEDIA_RESEND_AFTER)
    ids = list(stale.values_list("pk", flat=True)[:500])
    for inbound_id in ids:
        _enqueue_media(inbound_id)
    return len(ids)
