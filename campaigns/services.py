"""Campaign workflows: every entry point (API, admin, commands, actors) calls these.

Keyword-only functions named `<entity>_<action>`. Lifecycle rules about one campaign row
are `Campaign` methods; the functions here add what crosses rows and processes: the
audience snapshot, cancelling unsent deliveries, enqueuing senders on commit, live updates.

A start answers at once: the campaign becomes `preparing` and a worker takes the audience
snapshot (`campaign_prepare`, set-based in `campaigns.snapshot`), then makes it run.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import IO, Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Count, ProtectedError, Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from campaigns import csv_import, pacing, ratelimit, retention, snapshot
from campaigns.consent import acting_user
from campaigns.consent import contact_consent_change as contact_consent_change
from campaigns.consent import contacts_opt_out_by_provider as contacts_opt_out_by_provider
from campaigns.csv_import import ImportResult, import_contacts
from campaigns.live import broadcast_stats_on_commit
from campaigns.models import (
    Campaign,
    CampaignActivity,
    Connection,
    ConsentEvent,
    ConsentSettings,
    Contact,
    ContactErasure,
    ContactImport,
    ContactImportError,
    Delivery,
    DeliveryEvent,
    InboundMessage,
    InvalidTransition,
    LostClaim,
    MessageTemplate,
    clean_tags,
    normalize_keyword,
    normalize_phone,
)
from campaigns.providers import (
    OutgoingMessage,
    Provider,
    ProviderError,
    RemoteTemplate,
    provider_class,
    provider_for,
    registry,
)
from campaigns.snapshot import render_text
from media import objects
from media.models import Asset
from sense.errors import Conflict, ServiceError, Unavailable
from sense.models import Tenant
from sense.tenancy import get_for_tenant

log = logging.getLogger("sense.campaigns")

# A preparation run hands over to a fresh message after this long (workers stay shared).
PREPARE_SLICE_SECONDS = 30.0


# --- Contacts ---------------------------------------------------------------------------


def contact_create(
    *,
    tenant: Tenant,
    phone: str,
    name: str = "",
    attributes: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    opted_out: bool = False,
    source: str = ConsentEvent.Source.API,
    user: Any = None,
) -> Contact:
    """A new contact; created opted out, its ConsentEvent (SOURCE, USER) records it."""
    try:
        e164 = normalize_phone(phone)
    except ValueError as exc:
        raise ServiceError(f"{exc}: {phone!r}", code="invalid_phone") from None
    now = timezone.now()
    try:
        with transaction.atomic():
            contact = Contact.objects.create(
                tenant=tenant,
                phone=e164,
                name=name.strip(),
                attributes=attributes or {},
                tags=clean_tags(tags or []),
                opted_out=opted_out,
                opted_out_at=now if opted_out else None,
                opt_out_source=source if opted_out else "",
            )
            if opted_out:
                ConsentEvent.objects.create(
                    tenant=tenant, contact=contact, opted_out=True, source=source, user=acting_user(user), at=now
                )
            return contact
    except IntegrityError:
        raise Conflict(f"A contact with phone {e164} already exists.", code="duplicate_phone") from None


class OptInNeedsReason(Conflict):
    """Clearing an opt-out by a plain edit: it must go through an opt-in with a reason."""

    code = "opt_in_requires_reason"


def contact_update(
    *, contact: Contact, source: str = ConsentEvent.Source.API, user: Any = None, **changes: Any
) -> Contact:
    """Change NAME, ATTRIBUTES, TAGS, OPTED_OUT or PHONE (keys absent are left alone).

    OPTED_OUT true opts the contact out through `contact_consent_change` (SOURCE, USER: the
    change is recorded); false on an opted-out contact is refused (OptInNeedsReason, 409):
    an opt-out is cleared only by `contact_opt_in`, which takes a reason."""
    opted_out = changes.pop("opted_out", None)
    if opted_out is False and contact.opted_out:
        raise OptInNeedsReason(
            "This contact opted out: a plain edit cannot opt it back in. Opt it in with a reason "
            f'(POST /api/contacts/{contact.pk}/opt-in/ with {{"reason": ...}}, or the contact\'s page).'
        )
    if changes:
        contact = _contact_save(contact, changes)
    if opted_out:  # after the edit, which may still be refused (a duplicate phone)
        contact_consent_change(contact=contact, opted_out=True, source=source, user=user)
        contact.refresh_from_db()
    return contact


def _contact_save(contact: Contact, changes: dict[str, Any]) -> Contact:
    """CONTACT with CHANGES (fields other than the opt-out) normalized and saved."""
    if "phone" in changes:
        try:
            changes["phone"] = normalize_phone(changes["phone"])
        except ValueError as exc:
            raise ServiceError(f"{exc}: {changes['phone']!r}", code="invalid_phone") from None
    if "tags" in changes:
        changes["tags"] = clean_tags(changes["tags"] or [])
    if "name" in changes:
        changes["name"] = (changes["name"] or "").strip()
    for field, value in changes.items():
        setattr(contact, field, value)
    try:
        with transaction.atomic():
            contact.save(update_fields=[*changes, "updated_at"])
    except IntegrityError:
        raise Conflict(f"A contact with phone {contact.phone} already exists.", code="duplicate_phone") from None
    return contact


ERASED_PHONE = "erased"


def contact_erase(*, contact: Contact, user: Any = None, via: str = ContactErasure.Via.API) -> ContactErasure:
    """Erase CONTACT for good (LGPD): its phone, name, attributes and tags go with its row,
    and so do its tenant's stored webhook bodies that carry its number, whatever their
    status (pending ones are applied first: `retention.webhook_events_erase`). Its
    deliveries stay, as anonymous rows (phone replaced, text and error text removed, no
    contact), so campaign counters and `recalc_campaign_stats --check` stay exact; unsent
    ones are cancelled (counted as such). Returns the audit record (when, who, via, counts;
    nothing about the contact). A contact erased meanwhile by someone else is a 404."""
    with transaction.atomic():
        contact = get_for_tenant(Contact.objects.select_for_update(), contact.tenant, pk=contact.pk)
        tenant, phone = contact.tenant, contact.phone
        # Searched before any delivery is locked; pending ones are applied, then deleted.
        webhooks_deleted = retention.webhook_events_erase(
            retention.webhook_events_with_phone(tenant=tenant, phone=phone)
        )
        deliveries = Delivery.objects.filter(contact=contact)
        campaigns: set[Any] = set()
        cancelled = 0
        unsent = deliveries.filter(status=Delivery.Status.PENDING).values_list("pk", "campaign_id")
        for delivery_id, campaign_id in unsent:
            # Conditional: a sender that claimed it first sends it (it already read the number).
            if Delivery.move(
                delivery_id,
                from_status=Delivery.Status.PENDING,
                to_status=Delivery.Status.CANCELLED,
                error_code="contact_erased",
            ):
                cancelled += 1
                campaigns.add(campaign_id)
        delivery_ids = list(deliveries.values_list("pk", flat=True))
        anonymized = Delivery.objects.filter(pk__in=delivery_ids).update(
            contact=None,
            phone=ERASED_PHONE,
            text="",
            error_message="",
            template_values=None,  # a template's parameters carry the contact's data too
            updated_at=timezone.now(),
        )
        # Provider error texts can quote the number.
        DeliveryEvent.objects.filter(delivery_id__in=delivery_ids).exclude(error_message="").update(error_message="")
        # What the contact sent us goes too: its inbound messages, and their attachments
        # from the media library (the objects once this commits). Matched by phone as
        # well, for messages stored before the contact was (or while it had no row).
        inbound = InboundMessage.objects.filter(Q(contact=contact) | Q(phone=phone), tenant=tenant)
        asset_ids = [pk for pk in inbound.exclude(media=None).values_list("media_id", flat=True) if pk]
        _, per_model = inbound.delete()
        inbound_deleted = per_model.get(InboundMessage._meta.label, 0)
        keys: list[str] = []
        for asset in Asset.objects.filter(tenant=tenant, pk__in=asset_ids, origin=Asset.Origin.INBOUND):
            try:
                with transaction.atomic():
                    asset.delete()
            except ProtectedError:  # an operator attached it to a campaign: it is theirs now
                continue
            keys += [key for key in (asset.key, asset.thumbnail_key) if key]
        if keys:
            transaction.on_commit(lambda: objects.delete(*keys))
        # The admin's history names the contact (its str(): name and phone) in each entry.
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Contact), object_id=str(contact.pk)
        ).update(object_repr=ERASED_PHONE)
        contact.delete()
        who = acting_user(user)
        erasure = ContactErasure.objects.create(
            tenant=tenant,
            erased_by=who,
            erased_by_name=who.get_username() if who else "",
            via=via,
            deliveries_anonymized=anonymized,
            deliveries_cancelled=cancelled,
            webhook_events_deleted=webhooks_deleted,
        )
        for campaign_id in campaigns:
            broadcast_stats_on_commit(campaign_id)
    for campaign_id in campaigns:
        campaign_finish_if_done(campaign_id=campaign_id)
    log.info(
        "[CAMPAIGN] contact erased for tenant %s via %s (erasure %s): %d deliveries anonymized, %d cancelled, "
        "%d stored webhooks deleted, %d inbound messages deleted",
        tenant.slug,
        via,
        erasure.pk,
        anonymized,
        cancelled,
        webhooks_deleted,
        inbound_deleted,
    )
    return erasure


def contacts_import(*, tenant: Tenant, file: Iterable[bytes | str]) -> ImportResult:
    """Import a CSV FILE (an uploaded file, an open binary file or lines) into TENANT; returns
    an ImportResult (created, updated, errors [{row, error}])."""
    result = import_contacts(tenant=tenant, lines=file)
    log.info(
        "[CAMPAIGN] contacts imported for %s: %d created, %d updated, %d bad rows",
        tenant.slug,
        result.created,
        result.updated,
        result.error_count,
    )
    return result


def contacts_import_upload(*, tenant: Tenant, user: Any, file: UploadedFile) -> ImportResult | ContactImport:
    """Import an uploaded CSV FILE: at once when it has at most CONTACT_IMPORT_SYNC_MAX_ROWS
    rows (returns the ImportResult), else in a worker (returns the queued ContactImport)."""
    rows = csv_import.count_lines(file) - 1
    if rows <= settings.CONTACT_IMPORT_SYNC_MAX_ROWS:
        return contacts_import(tenant=tenant, file=file)
    return contact_import_start(tenant=tenant, user=user, file=file, name=file.name or "contacts.csv", rows=rows)


def contact_import_start(*, tenant: Tenant, user: Any, file: IO[bytes], name: str, rows: int) -> ContactImport:
    """Queue the import of the CSV FILE (seekable, about ROWS rows): its header is checked,
    it goes to storage (any worker can read it there), and the job is sent on commit.
    Raises ServiceError `invalid_csv` for an unusable header and Unavailable when storage
    cannot be reached; in both cases nothing remains."""
    csv_import.header_of(file)
    import_id = uuid.uuid4()
    key = f"tenants/{tenant.pk}/imports/{import_id}.csv"
    try:
        objects.put_file(key, file, "text/csv")
    except objects.StorageUnavailable as exc:
        raise Unavailable("File storage is unreachable; try again shortly.", code="storage_unavailable") from exc
    try:
        with transaction.atomic():
            job = ContactImport.objects.create(
                id=import_id,
                tenant=tenant,
                file_key=key,
                original_name=name[:255],
                created_by=user if getattr(user, "pk", None) else None,
                total=max(rows, 0),
                heartbeat_at=timezone.now(),
            )
            _enqueue_import(job.pk)
    except Exception:
        objects.delete(key)
        raise
    log.info("[CAMPAIGN] contact import %s queued for %s: about %d rows", job.pk, tenant.slug, job.total)
    return job


def _enqueue_import(import_id: Any) -> None:
    from campaigns.tasks import run_contact_import

    transaction.on_commit(lambda: run_contact_import.send(str(import_id)))


def contact_import_run(*, import_id: Any) -> None:
    """Do (or go on with) the import IMPORT_ID, if this worker can claim it: chunk after
    chunk, each in one transaction with its progress; then finished (the file is deleted),
    or failed when the file turns out unreadable or the import ran out of attempts. Other
    errors put it back in the queue, progress kept, and raise (the job is retried)."""
    job = ContactImport.claim(import_id, stale_after=settings.CONTACT_IMPORT_STALE_SECONDS)
    if job is None:
        return
    if job.attempts > settings.CONTACT_IMPORT_MAX_ATTEMPTS:
        job.fail(f"The import was interrupted {job.attempts - 1} times; import the rest of the file again.")
        log.error("[CAMPAIGN] contact import %s failed: out of attempts", job.pk)
        return
    try:
        with tempfile.TemporaryFile() as fp:
            objects.download(job.file_key, fp)
            _import_chunks(job, fp)
    except LostClaim:
        log.warning("[CAMPAIGN] contact import %s was taken over by another worker", job.pk)
        return
    except ServiceError as exc:
        job.fail(exc.message)
        log.warning("[CAMPAIGN] contact import %s failed: %s", job.pk, exc.message)
        return
    except BaseException:
        job.release()
        raise
    if job.finish():
        objects.delete(job.file_key)
        log.info(
            "[CAMPAIGN] contact import %s finished for %s: %d rows, %d created, %d updated, %d bad rows",
            job.pk,
            job.tenant.slug,
            job.processed,
            job.created,
            job.updated,
            job.error_count,
        )


def _import_chunks(job: ContactImport, fp: IO[bytes]) -> None:
    """Import JOB's file FP from where its last committed chunk ended."""
    chunk_rows = settings.CONTACT_IMPORT_CHUNK_ROWS
    if job.offset:
        header = csv_import.header_of(fp)
        chunks = csv_import.read_chunks(
            csv_import.split_lines(fp, job.offset),
            chunk_rows=chunk_rows,
            header=header,
            first_row=job.processed + 2,
            offset=job.offset,
        )
    else:
        chunks = csv_import.read_chunks(csv_import.split_lines(fp), chunk_rows=chunk_rows)
    tenant = job.tenant
    for chunk in chunks:
        with transaction.atomic():
            job.lock_claim()
            created, updated = csv_import.upsert(tenant, chunk.rows)
            ContactImportError.objects.bulk_create(
                ContactImportError(tenant=tenant, contact_import=job, row=e["row"], error=e["error"])
                for e in chunk.errors
            )
            job.record_chunk(
                last_row=chunk.last_row,
                offset=chunk.offset,
                created=created,
                updated=updated,
                errors=chunk.errors,
            )


def contact_imports_sweep() -> int:
    """Send the job again for imports nobody works on: queued ones whose message the broker
    lost, running ones whose worker has been silent for CONTACT_IMPORT_STALE_SECONDS (their
    claim is withdrawn, so that a late worker stops at its next chunk). Returns how many."""
    from campaigns.tasks import run_contact_import

    now = timezone.now()
    stale = now - timedelta(seconds=settings.CONTACT_IMPORT_STALE_SECONDS)
    candidates = ContactImport.objects.filter(
        status__in=[ContactImport.Status.QUEUED, ContactImport.Status.RUNNING], heartbeat_at__lt=stale
    ).values_list("pk", "heartbeat_at")[:100]
    sent = 0
    for pk, seen in candidates:
        # Conditional on the heartbeat seen: of several workers' sweepers, one re-sends.
        if ContactImport.objects.filter(
            pk=pk, heartbeat_at=seen, status__in=[ContactImport.Status.QUEUED, ContactImport.Status.RUNNING]
        ).update(status=ContactImport.Status.QUEUED, claim_token=None, heartbeat_at=now):
            run_contact_import.send(str(pk))
            sent += 1
    if sent:
        log.warning("[CAMPAIGN] %d stalled contact import(s) sent again", sent)
    return sent


async def contact_import_errors_csv(*, job: ContactImport) -> AsyncIterator[str]:
    """Every bad row of JOB as CSV (`row,error`), in row order, read from the database as the
    response goes out. Asynchronous: under ASGI Django reads a synchronous iterator whole
    before sending anything, and an import may have a million bad rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "error"])
    rows = ContactImportError.objects.filter(tenant_id=job.tenant_id, contact_import_id=job.pk).order_by("row")
    written = 0
    # Model rows, not values_list(): its iterable runs the query as soon as it is asked for an
    # iterator, which aiterator() does in the event loop's thread (SynchronousOnlyOperation).
    async for bad in rows.only("row", "error").aiterator(chunk_size=2000):
        writer.writerow([bad.row, bad.error])
        written += 1
        if written % 1000 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


# --- Connections --------------------------------------------------------------------------


def _provider(name: str) -> type[Provider]:
    try:
        return provider_class(name)
    except KeyError:
        raise ServiceError(f"Unknown provider {name!r}: use {', '.join(registry)}.", code="invalid_provider") from None


def connection_provider_check(*, provider: str) -> type[Provider]:
    """PROVIDER's class, when new connections of it may be made here: refuses an unknown
    provider and one that is switched off (the sandbox without SANDBOX_ENABLED)."""
    cls = _provider(provider)
    reason = cls.disabled_reason()
    if reason:
        raise ServiceError(reason, code="provider_disabled")
    return cls


def _clean_credentials(credentials: dict[str, Any]) -> dict[str, str]:
    """CREDENTIALS stripped, without blank values (a blank one means "not given")."""
    return {k: str(v).strip() for k, v in credentials.items() if v is not None and str(v).strip()}


def connection_credentials_check(*, provider: str, credentials: dict[str, Any]) -> dict[str, str]:
    """CREDENTIALS cleaned for PROVIDER: refuses unknown names and missing required ones
    (`Provider.credentials`) with a ServiceError naming them."""
    cls = _provider(provider)
    creds = _clean_credentials(credentials)
    unknown = sorted(set(creds) - set(cls.allowed_credentials()))
    if unknown:
        raise ServiceError(f"Unknown credential(s) for {provider}: {', '.join(unknown)}.", code="invalid_credentials")
    missing = [k for k in cls.required_credentials() if not creds.get(k)]
    if missing:
        raise ServiceError(f"Missing credential(s) for {provider}: {', '.join(missing)}.", code="invalid_credentials")
    _check_values(cls, creds)
    return creds


def _check_values(cls: type[Provider], credentials: dict[str, str]) -> None:
    try:
        cls.check_credentials(credentials)
    except ValueError as exc:
        raise ServiceError(str(exc), code="invalid_credentials") from None


def connection_create(
    *,
    tenant: Tenant,
    name: str,
    provider: str,
    credentials: dict[str, str],
    base_url: str = "",
    rate_per_minute: int = 60,
    daily_limit: int | None = None,
    is_active: bool = True,
) -> Connection:
    """A new connection with the credentials its provider declares (`Provider.credentials`:
    the required ones must be given); base_url defaults to the provider's own, where it has
    one (Cloud API: CLOUD_API_BASE_URL; sandbox: SANDBOX_WEBHOOK_BASE_URL). Refuses a provider
    that is switched off."""
    cls = connection_provider_check(provider=provider)
    creds = connection_credentials_check(provider=provider, credentials=credentials)
    base_url = base_url or cls.default_base_url()
    if not base_url:
        raise ServiceError(f"base_url is required for {provider} connections.", code="invalid_base_url")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ServiceError("base_url must be an http(s) URL.", code="invalid_base_url")
    if rate_per_minute < 0:
        raise ServiceError("rate_per_minute must be 0 (no limit) or more.", code="invalid_rate")
    _check_daily_limit(daily_limit)
    connection = Connection.objects.create(
        tenant=tenant,
        name=name.strip() or provider,
        provider=provider,
        base_url=base_url.rstrip("/"),
        credentials=creds,
        rate_per_minute=rate_per_minute,
        daily_limit=daily_limit,
        is_active=is_active,
    )
    log.info("[CAMPAIGN] connection %s (%s) created for tenant %s", connection.pk, provider, tenant.slug)
    return connection


def connection_update(
    *, connection: Connection, credentials: dict[str, str] | None = None, **changes: Any
) -> Connection:
    """Change NAME, BASE_URL, RATE_PER_MINUTE or IS_ACTIVE; CREDENTIALS given are merged in
    (a blank value keeps the stored one: they are write-only)."""
    if credentials:
        cls = _provider(connection.provider)
        unknown = sorted(set(credentials) - set(cls.allowed_credentials()))
        if unknown:
            raise ServiceError(f"Unknown credential(s): {', '.join(unknown)}.", code="invalid_credentials")
        merged = {**connection.credentials, **_clean_credentials(credentials)}
        _check_values(cls, merged)
        connection.credentials = merged
        changes["credentials"] = connection.credentials
    if changes.get("rate_per_minute") is not None and changes["rate_per_minute"] < 0:
        raise ServiceError("rate_per_minute must be 0 (no limit) or more.", code="invalid_rate")
    if "daily_limit" in changes:
        _check_daily_limit(changes["daily_limit"])
    for field, value in changes.items():
        setattr(connection, field, value)
    if changes:
        connection.save(update_fields=list(changes))
    return connection


def _check_daily_limit(value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ServiceError("daily_limit must be 1 or more, or null for no daily cap.", code="invalid_daily_limit")


def connection_webhook_path(connection: Connection) -> str:
    """The path the provider must call with status webhooks."""
    return reverse(_provider(connection.provider).webhook_url_name, args=[connection.webhook_token])


# --- Message templates ----------------------------------------------------------------------

# Meta's Graph error codes when listing templates, and what they mean for the person.
GRAPH_ERRORS = {
    "190": ("template_sync_bad_token", "Meta refused the access token (190): give the connection a valid one."),
    "100": (
        "template_sync_bad_waba",
        "Meta does not know this WhatsApp Business Account id, or the token cannot read it (100).",
    ),
    "200": ("template_sync_forbidden", "The token lacks the whatsapp_business_management permission (200)."),
    "10": ("template_sync_forbidden", "The token lacks the whatsapp_business_management permission (10)."),
    "not_configured": ("waba_id_missing", "The connection has no WhatsApp Business Account id (waba_id): add it."),
}


@dataclass
class TemplateSync:
    synced: int = 0  # templates Meta listed
    created: int = 0
    updated: int = 0  # listed ones whose stored description changed
    deleted: int = 0  # stored ones Meta no longer lists, now DELETED

    def as_dict(self) -> dict[str, int]:
        return {"synced": self.synced, "created": self.created, "updated": self.updated, "deleted": self.deleted}


def templates_sync(*, connection: Connection) -> TemplateSync:
    """Bring CONNECTION's message templates in line with what its provider lists: insert new
    ones, update changed ones, mark ones no longer listed DELETED (kept: campaigns may name
    them), all in one transaction, after the whole listing was read. Campaigns whose
    template became unsendable are paused. A provider error (Meta's 190 bad token, 100 bad
    account id, no waba_id) raises ServiceError and changes nothing."""
    cls = _provider(connection.provider)
    if not cls.supports_templates:
        raise ServiceError(
            f"{connection.get_provider_display()} connections have no message templates.", code="templates_unsupported"
        )
    try:
        remote = provider_for(connection).list_templates()
    except ProviderError as exc:
        log.warning("[CAMPAIGN] template sync of connection %s failed: %s", connection.pk, exc.code)
        if exc.transient:
            raise Unavailable(
                f"Meta could not be reached or is busy: {exc.message}", code="template_sync_unavailable"
            ) from None
        code, message = GRAPH_ERRORS.get(exc.code, ("template_sync_failed", f"Meta refused the listing: {exc}"))
        raise ServiceError(message, code=code) from None
    listed: dict[tuple[str, str], RemoteTemplate] = {}
    for item in remote:
        listed[(item.name, item.language)] = item
    outcome = TemplateSync(synced=len(listed))
    now = timezone.now()
    paused: list[Any] = []
    with transaction.atomic():
        # Two syncs of one connection (the periodic job runs in every worker) take turns here:
        # the second sees what the first stored instead of inserting it again.
        Connection.objects.select_for_update().filter(pk=connection.pk).first()
        stored = {
            (t.name, t.language): t for t in MessageTemplate.objects.select_for_update().filter(connection=connection)
        }
        for key, item in listed.items():
            fields = {
                "meta_id": item.template_id,
                "status": item.status,
                "category": item.category,
                "parameter_format": item.parameter_format
                if item.parameter_format in MessageTemplate.ParameterFormat.values
                else MessageTemplate.ParameterFormat.POSITIONAL,
                "components": item.components,
                "quality_score": item.quality_score,
                "status_reason": item.reason,
            }
            template = stored.get(key)
            if template is None:
                MessageTemplate.objects.create(
                    tenant_id=connection.tenant_id,
                    connection=connection,
                    name=item.name,
                    language=item.language,
                    synced_at=now,
                    **fields,
                )
                outcome.created += 1
                continue
            changed = {k: v for k, v in fields.items() if getattr(template, k) != v}
            for name, value in changed.items():
                setattr(template, name, value)
            template.synced_at = now
            template.save(update_fields=[*changed, "synced_at", "updated_at"])
            if changed:
                outcome.updated += 1
                if "status" in changed:
                    paused += template.pause_campaigns()
        for key, template in stored.items():
            if key in listed or template.status == MessageTemplate.Status.DELETED:
                continue
            template.apply_change(status=MessageTemplate.Status.DELETED, reason="Meta no longer lists it.")
            MessageTemplate.objects.filter(pk=template.pk).update(synced_at=now)
            outcome.deleted += 1
            paused += template.pause_campaigns()
        for campaign_id in paused:
            broadcast_stats_on_commit(campaign_id)
    log.info("[CAMPAIGN] templates of connection %s synced: %s", connection.pk, outcome.as_dict())
    return outcome


def templates_sync_all(
    *, tenant: Tenant | None = None, connection_id: UUID | str | None = None, fresh_for: float = 0.0
) -> dict[str, Any]:
    """Sync every active connection that has templates (of TENANT, or only CONNECTION_ID),
    skipping those synced less than FRESH_FOR seconds ago (the periodic job: another worker
    just did it): connection id -> its TemplateSync counts, or {"error", "code"} for one
    that failed."""
    connections = Connection.objects.filter(
        is_active=True, provider__in=[n for n, c in registry.items() if c.supports_templates]
    )
    if tenant is not None:
        connections = connections.filter(tenant=tenant)
    if connection_id is not None:
        connections = connections.filter(pk=connection_id)
    results: dict[str, Any] = {}
    for connection in connections.order_by("created_at"):
        if connection_id is None and not connection.credential("waba_id"):
            continue  # free text only: nothing to sync
        if (
            fresh_for
            and MessageTemplate.objects.filter(
                connection=connection, synced_at__gt=timezone.now() - timedelta(seconds=fresh_for)
            ).exists()
        ):
            continue
        try:
            results[str(connection.pk)] = templates_sync(connection=connection).as_dict()
        except ServiceError as exc:
            results[str(connection.pk)] = {"error": exc.message, "code": exc.code}
    return results


# --- Campaigns ----------------------------------------------------------------------------


def render_message(template: str, contact: Contact) -> str:
    """TEMPLATE rendered for CONTACT (see render_text)."""
    return render_text(template, name=contact.name, phone=contact.phone, attributes=contact.attributes or {})


def _connection_for(tenant: Tenant, connection_id: UUID | str) -> Connection:
    connection = Connection.objects.filter(tenant=tenant, pk=connection_id).first()
    if connection is None:
        raise ServiceError("No such connection.", code="invalid_connection", status=422)
    return connection


def _media_for(tenant: Tenant, media_id: UUID | str | None) -> Asset | None:
    if not media_id:
        return None
    asset = Asset.objects.filter(tenant=tenant, pk=media_id).first()
    if asset is None:
        raise ServiceError("No such media asset.", code="invalid_media", status=422)
    if asset.status != Asset.Status.READY:
        raise ServiceError("The media asset is not ready yet.", code="media_not_ready", status=422)
    return asset


def _template_for(tenant: Tenant, template_id: int | None) -> MessageTemplate | None:
    if template_id is None:
        return None
    template = MessageTemplate.objects.filter(tenant=tenant, pk=template_id).select_related("connection").first()
    if template is None:
        raise ServiceError("No such message template.", code="template_not_found")
    return template


def _clean_params(params: dict[str, Any] | None) -> dict[str, str]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ServiceError("template_params must be an object.", code="template_param_invalid")
    return {str(k).strip(): "" if v is None else str(v) for k, v in params.items()}


def campaign_template_check(*, campaign: Campaign) -> None:
    """Refuse (ServiceError 400 with a precise code) a campaign whose template cannot be sent
    as set up: another connection's template (`template_wrong_connection`), one not APPROVED
    (`template_not_approved`), a parameter without a mapping (`template_param_unmapped`) or
    a mapping of no parameter (`template_param_unknown`), a media header without its asset
    (`header_media_missing`) or with one of another kind (`header_media_wrong_kind`), header
    media without a media header (`header_media_unexpected`), or an attachment besides the
    template (`template_with_media`). Nothing to check without a template, except header media."""
    template = campaign.template
    if template is None:
        if campaign.header_media_id is not None or campaign.template_params:
            raise ServiceError("Header media and template parameters need a template.", code="template_missing")
        return
    if template.connection_id != campaign.connection_id:
        raise ServiceError(
            f'The template "{template.name}" belongs to another connection than the campaign\'s.',
            code="template_wrong_connection",
        )
    if not template.is_approved:
        raise ServiceError(
            template.blocked_reason() + " Only approved templates can be sent.", code="template_not_approved"
        )
    if campaign.media_id is not None:
        raise ServiceError(
            "A template campaign sends no attachment: use the header media when the template has one.",
            code="template_with_media",
        )
    wanted = template.parameters
    params = campaign.template_params or {}
    unknown = [key for key in params if key not in wanted]
    if unknown:
        raise ServiceError(
            f"Unknown template parameter(s): {', '.join(unknown)}; the template has: {', '.join(wanted) or 'none'}.",
            code="template_param_unknown",
        )
    unmapped = [key for key in wanted if not params.get(key, "").strip()]
    if unmapped:
        raise ServiceError(f"Map every template parameter: {', '.join(unmapped)}.", code="template_param_unmapped")
    kind = template.header_media_kind
    asset = campaign.header_media
    if kind is None:
        if asset is not None:
            raise ServiceError("The template's header takes no media.", code="header_media_unexpected")
    elif asset is None:
        raise ServiceError(f"The template's header needs a {kind}: choose one.", code="header_media_missing")
    elif asset.file_type != kind:
        raise ServiceError(
            f"The template's header needs a {kind}, not a {asset.file_type}.", code="header_media_wrong_kind"
        )


# The safe-sending settings of a campaign (campaigns.pacing), as the API and forms name them.
SENDING_SETTINGS = (
    "rotation",
    "interval_min_seconds",
    "interval_max_seconds",
    "pause_every",
    "pause_seconds",
    "typing_seconds",
    "send_window",
    "skip_dates",
    "variants",
)
MAX_INTERVAL_SECONDS = 3600
MAX_TYPING_SECONDS = 60
MAX_VARIANTS = 5


def _connections_for(tenant: Tenant, ids: Sequence[UUID | str]) -> list[Connection]:
    """The connections IDS names, in their order: one or more, of TENANT, of one provider."""
    unique = list(dict.fromkeys(str(i) for i in ids))
    if not unique:
        raise ServiceError("A connection is required.", code="invalid_connection")
    try:
        found = {str(c.pk): c for c in Connection.objects.filter(tenant=tenant, pk__in=unique)}
    except (ValueError, TypeError, ValidationError):
        found = {}
    missing = [i for i in unique if i not in found]
    if missing:
        raise ServiceError(f"No such connection: {', '.join(missing)}.", code="invalid_connection")
    connections = [found[i] for i in unique]
    if len({c.provider for c in connections}) > 1:
        raise ServiceError("A campaign's connections must all be of one provider.", code="mixed_providers")
    return connections


def _seconds(changes: dict[str, Any], name: str, *, maximum: int, code: str) -> int:
    value = changes[name]
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ServiceError(f"{name} must be a whole number from 0 to {maximum}.", code=code)
    return value


def _send_window(value: Any) -> dict[str, Any] | None:
    if value in (None, {}, ""):
        return None
    if not isinstance(value, dict) or set(value) - {"days", "start", "end"}:
        raise ServiceError(
            'send_window is {"days": [1..7], "start": "HH:MM", "end": "HH:MM"}.', code="invalid_send_window"
        )
    days = value.get("days", [1, 2, 3, 4, 5, 6, 7])
    if (
        not isinstance(days, list)
        or not days
        or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7 for d in days)
    ):
        raise ServiceError("send_window.days are ISO weekdays, 1 (Monday) to 7 (Sunday).", code="invalid_send_window")
    try:
        start, end = pacing.parse_hhmm(value.get("start", "")), pacing.parse_hhmm(value.get("end", ""))
    except ValueError:
        raise ServiceError("send_window.start and .end are times as HH:MM.", code="invalid_send_window") from None
    if start >= end:
        raise ServiceError("send_window.start must come before its end.", code="invalid_send_window")
    return {"days": sorted(set(days)), "start": str(value["start"]).strip(), "end": str(value["end"]).strip()}


def _skip_dates(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ServiceError("skip_dates is a list of dates (YYYY-MM-DD).", code="invalid_skip_dates")
    dates = []
    for item in value:
        try:
            dates.append(date.fromisoformat(str(item).strip()).isoformat())
        except ValueError:
            raise ServiceError(f"skip_dates: {item!r} is not a date (YYYY-MM-DD).", code="invalid_skip_dates") from None
    return sorted(set(dates))


def _variants(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise ServiceError("variants is a list of texts.", code="invalid_variants")
    if len(value) > MAX_VARIANTS:
        raise ServiceError(f"At most {MAX_VARIANTS} variants.", code="invalid_variants")
    if any(not v.strip() or len(v) > 4096 for v in value):
        raise ServiceError("Each variant is a text of 1 to 4096 characters.", code="invalid_variants")
    return list(value)


def campaign_settings_clean(*, changes: dict[str, Any], current: Campaign | None = None) -> dict[str, Any]:
    """The SENDING_SETTINGS among CHANGES, checked and normalized into Campaign fields
    (CURRENT gives the values not changed, for the checks across fields). Raises
    ServiceError with a code per setting (400)."""
    out: dict[str, Any] = {}
    if "rotation" in changes:
        if changes["rotation"] not in Campaign.Rotation.values:
            choices = ", ".join(Campaign.Rotation.values)
            raise ServiceError(f"rotation is one of {choices}.", code="invalid_rotation")
        out["rotation"] = changes["rotation"]
    for name in ("interval_min_seconds", "interval_max_seconds"):
        if name in changes:
            out[name] = _seconds(changes, name, maximum=MAX_INTERVAL_SECONDS, code="invalid_interval")
    for name in ("pause_every", "pause_seconds"):
        if name in changes:
            limit = 100_000 if name == "pause_every" else 24 * 3600
            out[name] = _seconds(changes, name, maximum=limit, code="invalid_pause")
    if "typing_seconds" in changes:
        out["typing_seconds"] = _seconds(changes, "typing_seconds", maximum=MAX_TYPING_SECONDS, code="invalid_typing")
    if "send_window" in changes:
        out["send_window"] = _send_window(changes["send_window"])
    if "skip_dates" in changes:
        out["skip_dates"] = _skip_dates(changes["skip_dates"])
    if "variants" in changes:
        out["variants"] = _variants(changes["variants"])

    def value(name: str) -> Any:
        return out[name] if name in out else getattr(current, name, 0) if current is not None else 0

    if value("interval_min_seconds") > value("interval_max_seconds"):
        raise ServiceError("interval_min_seconds must not exceed interval_max_seconds.", code="invalid_interval")
    if bool(value("pause_every")) != bool(value("pause_seconds")):
        raise ServiceError("pause_every and pause_seconds go together (both 0: no breaks).", code="invalid_pause")
    return out


def _connection_ids(changes: dict[str, Any]) -> list[Any] | None:
    """`connection_ids` or, as a list of one, `connection_id` (None when neither is given)."""
    ids = changes.get("connection_ids")
    if ids is not None:
        if not isinstance(ids, list | tuple):
            raise ServiceError("connection_ids is a list of connection ids.", code="invalid_connection")
        return list(ids)
    if changes.get("connection_id") is not None:
        return [changes["connection_id"]]
    return None


def campaign_create(
    *,
    tenant: Tenant,
    name: str,
    message: str,
    connection_id: UUID | str | None = None,
    connection: Connection | None = None,
    connection_ids: Sequence[UUID | str] | None = None,
    media_id: UUID | str | None = None,
    media: Asset | None = None,
    tags: list[str] | None = None,
    scheduled_at: datetime | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
    template_id: int | None = None,
    template_params: dict[str, str] | None = None,
    header_media_id: UUID | str | None = None,
    **settings_: Any,
) -> Campaign:
    """A new draft campaign on one or more connections (CONNECTION, CONNECTION_ID or
    CONNECTION_IDS, the first being its primary) of TENANT, with an optional ready media
    asset (MEDIA or MEDIA_ID) or a Cloud API message template (TEMPLATE_ID, its
    TEMPLATE_PARAMS and HEADER_MEDIA_ID; see campaign_template_check), and the
    SENDING_SETTINGS given."""
    template = _template_for(tenant, template_id)
    if template is None and not message.strip():
        raise ServiceError("The message is empty.", code="invalid_message", status=422)
    unknown = set(settings_) - set(SENDING_SETTINGS)
    if unknown:
        raise TypeError(f"unknown campaign settings: {sorted(unknown)}")
    if connection is not None:
        ids: list[Any] | None = [connection.pk]
    else:
        ids = _connection_ids({"connection_ids": connection_ids, "connection_id": connection_id})
    if not ids and connection_ids is None:
        raise ServiceError("A connection is required.", code="invalid_connection", status=422)
    if ids and len(ids) == 1 and connection_ids is None:
        connections = [_connection_for(tenant, ids[0])]  # the one-connection form keeps its 422
    else:
        connections = _connections_for(tenant, ids or [])
    fields = campaign_settings_clean(changes=settings_)
    campaign = Campaign(
        tenant=tenant,
        name=name.strip() or "Untitled campaign",
        connection=connections[0],
        message=message,
        media=_media_for(tenant, media.pk if media is not None else media_id),
        tags=clean_tags(tags or []),
        scheduled_at=scheduled_at,
        created_by=acting_user(user),
        template=template,
        template_params=_clean_params(template_params),
        header_media=_media_for(tenant, header_media_id),
        **fields,
    )
    campaign_template_check(campaign=campaign)
    with transaction.atomic():
        campaign.save(force_insert=True)
        if len(connections) > 1:
            campaign.extra_connections.set(connections[1:])
        CampaignActivity.record(campaign, "created", "Created as a draft.", user=user)
    log.info("[CAMPAIGN] %s created (tenant %s)", campaign.pk, tenant.slug)
    return campaign


def campaign_update(*, campaign: Campaign, user: Any = None, **changes: Any) -> Campaign:
    """Edit a draft: NAME, CONNECTION_ID or CONNECTION_IDS, MESSAGE, MEDIA_ID, TAGS,
    SCHEDULED_AT, TEMPLATE_ID (None: none), TEMPLATE_PARAMS, HEADER_MEDIA_ID and the
    SENDING_SETTINGS."""
    if not campaign.is_editable:
        raise Conflict("Only draft campaigns can be edited.", code="not_editable")
    updates: dict[str, Any] = {}
    if "template_id" in changes:
        campaign.template = _template_for(campaign.tenant, changes["template_id"])
        updates["template_id"] = campaign.template.pk if campaign.template else None
        if campaign.template is None:  # back to free text: the template's settings go with it
            changes.setdefault("template_params", {})
            changes.setdefault("header_media_id", None)
    if "template_params" in changes:
        campaign.template_params = updates["template_params"] = _clean_params(changes["template_params"])
    if "header_media_id" in changes:
        campaign.header_media = _media_for(campaign.tenant, changes["header_media_id"])
        updates["header_media_id"] = campaign.header_media.pk if campaign.header_media else None
    if "name" in changes:
        campaign.name = updates["name"] = (changes["name"] or "").strip() or campaign.name
    if "message" in changes:
        if not (changes["message"] or "").strip() and campaign.template is None:
            raise ServiceError("The message is empty.", code="invalid_message", status=422)
        campaign.message = updates["message"] = changes["message"] or ""
    connections: list[Connection] | None = None
    ids = _connection_ids(changes)
    if ids is not None:
        if "connection_ids" not in changes or changes.get("connection_ids") is None:
            connections = [_connection_for(campaign.tenant, ids[0])]
        else:
            connections = _connections_for(campaign.tenant, ids)
        campaign.connection = connections[0]
        updates["connection_id"] = campaign.connection.pk
    if "media_id" in changes:
        campaign.media = _media_for(campaign.tenant, changes["media_id"])
        updates["media_id"] = campaign.media.pk if campaign.media else None
    if "tags" in changes:
        campaign.tags = updates["tags"] = clean_tags(changes["tags"] or [])
    if "scheduled_at" in changes:
        campaign.scheduled_at = updates["scheduled_at"] = changes["scheduled_at"]
    if campaign.template is None and not campaign.message.strip():
        raise ServiceError("The message is empty.", code="invalid_message", status=422)
    campaign_template_check(campaign=campaign)
    fields = campaign_settings_clean(
        changes={k: v for k, v in changes.items() if k in SENDING_SETTINGS}, current=campaign
    )
    for name, value in fields.items():
        setattr(campaign, name, value)
    updates.update(fields)
    with transaction.atomic():
        # Conditional on still being a draft: a start that wins the race is not edited behind its back.
        edited = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.DRAFT).update(
            updated_at=timezone.now(), **updates
        )
        if not edited:
            raise Conflict("Only draft campaigns can be edited.", code="not_editable")
        if connections is not None:
            campaign.extra_connections.set(connections[1:])
        if updates:
            edited_fields = sorted(name.removesuffix("_id") for name in updates)
            CampaignActivity.record(
                campaign, "edited", f"Edited: {', '.join(edited_fields)}.", user=user, fields=edited_fields
            )
    return campaign


def _enqueue_senders(campaign_id: Any) -> None:
    """Start the campaign's senders once the transaction that made it runnable commits."""
    from campaigns.tasks import dispatch_campaign

    def send() -> None:
        for _ in range(settings.CAMPAIGN_SENDERS):
            dispatch_campaign.send(str(campaign_id))

    transaction.on_commit(send)


def _enqueue_preparation(campaign_id: Any) -> None:
    """Start the campaign's audience snapshot once the transaction that asked for it commits."""
    from campaigns.tasks import prepare_campaign

    transaction.on_commit(lambda: prepare_campaign.send(str(campaign_id)))


def _begin(campaign: Campaign, *, user: Any = None) -> Campaign:
    """draft/scheduled -> preparing; the snapshot's worker is enqueued on commit. Costs the
    same at any audience size: nothing is read from the audience here."""
    scheduled = campaign.status == Campaign.Status.SCHEDULED
    with transaction.atomic():
        campaign.start()
        message = "Started at its scheduled time." if scheduled and user is None else "Started."
        CampaignActivity.record(campaign, "started", f"{message} Preparing the audience.", user=user)
        _enqueue_preparation(campaign.pk)
        broadcast_stats_on_commit(campaign.pk)
    log.info("[CAMPAIGN] %s started: preparing its audience", campaign.pk)
    return campaign


class _Lost(Exception):
    """This run no longer owns the audience snapshot (cancelled, or taken over)."""


@dataclass
class Preparation:
    created: int = 0  # deliveries this run created
    status: str | None = None  # where the campaign was left when this run ended the snapshot
    again: bool = False  # the slice ended first: the caller enqueues another run


def campaign_prepare(
    *, campaign_id: UUID | str, slice_seconds: float | None = None, chunk_size: int | None = None
) -> Preparation:
    """Take CAMPAIGN_ID's audience snapshot for up to SLICE_SECONDS (PREPARE_SLICE_SECONDS;
    one chunk at least): one pending delivery per sendable contact, CHUNK_SIZE contacts
    (CAMPAIGN_PREPARE_CHUNK) per transaction, each with its counters. At the end the campaign
    runs (its senders enqueued on commit), finishes when empty, or stays paused if paused
    meanwhile. Idempotent: a run claims the snapshot first (nothing to do when another live
    run owns it, or it ended, or it was cancelled) and goes on from the last chunk committed;
    ON CONFLICT DO NOTHING keeps one delivery per contact whatever happens."""
    owner = uuid.uuid4()
    if not Campaign.claim_preparation(campaign_id, owner, stale_after=settings.CAMPAIGN_PREPARE_STALE_SECONDS):
        return Preparation()
    outcome = Preparation()
    size = chunk_size or settings.CAMPAIGN_PREPARE_CHUNK
    slice_seconds = PREPARE_SLICE_SECONDS if slice_seconds is None else slice_seconds
    started = time.monotonic()
    try:
        campaign = Campaign.objects.get(pk=campaign_id)
        cursor = campaign.prepare_cursor
        assert cursor is not None  # claimed: a snapshot is in progress
        if campaign.audience_count is None:
            count = snapshot.audience(campaign).count()
            Campaign.advance_preparation(campaign.pk, owner, upto=cursor, audience_count=count)
            broadcast_stats_on_commit(campaign.pk)
        while (upto := snapshot.next_bound(campaign, after=cursor, size=size)) is not None:
            try:
                with transaction.atomic():
                    created = snapshot.insert_deliveries(campaign, after=cursor, upto=upto)
                    # Last, so the campaign row is locked for a moment only and a pause or
                    # cancel never waits for a chunk (the inserts only key-share lock it). A
                    # cancel committed while this chunk was written fails this, and the chunk
                    # rolls back; one that comes after it sees (and cancels) its deliveries.
                    if not Campaign.advance_preparation(campaign.pk, owner, upto=upto, created=created):
                        raise _Lost
                    broadcast_stats_on_commit(campaign.pk)
            except _Lost:
                return outcome  # cancelled, or a newer run took over
            outcome.created += created
            cursor = upto
            if time.monotonic() - started > slice_seconds:  # after one chunk at least
                Campaign.release_preparation(campaign.pk, owner)
                outcome.again = True
                return outcome
        with transaction.atomic():
            outcome.status = Campaign.complete_preparation(campaign.pk, owner)
            if outcome.status == Campaign.Status.RUNNING:
                _enqueue_senders(campaign.pk)
            broadcast_stats_on_commit(campaign.pk)
    except BaseException:
        # Let the retry (or another run) claim it at once rather than after the heartbeat
        # goes stale; when the database itself is the trouble, the sweeper does it later.
        try:
            Campaign.release_preparation(campaign_id, owner)
        except Exception:
            log.warning("[CAMPAIGN] %s: preparation not released", campaign_id)
        raise
    if outcome.status is not None:
        log.info("[CAMPAIGN] %s prepared: %s", campaign_id, outcome.status)
    return outcome


def campaign_start(*, campaign: Campaign, user: Any = None) -> Campaign:
    """Start a draft: scheduled when its scheduled_at is in the future, preparing otherwise
    (running once a worker has taken its audience snapshot)."""
    if campaign.status != Campaign.Status.DRAFT:
        raise_invalid("start", campaign)
    campaign_template_check(campaign=campaign)
    if not campaign.connection.is_active and not campaign.extra_connections.filter(is_active=True).exists():
        raise Conflict("The campaign's connection is disabled.", code="connection_inactive")
    reason = _provider(campaign.connection.provider).disabled_reason()
    if reason:
        raise Conflict(reason, code="provider_disabled")
    if campaign.scheduled_at is not None and campaign.scheduled_at > timezone.now():
        with transaction.atomic():
            campaign.schedule()
            CampaignActivity.record(
                campaign,
                "scheduled",
                f"Scheduled for {timezone.localtime(campaign.scheduled_at):%Y-%m-%d %H:%M}.",
                user=user,
                scheduled_at=campaign.scheduled_at.isoformat(),
            )
            broadcast_stats_on_commit(campaign.pk)
        log.info("[CAMPAIGN] %s scheduled for %s", campaign.pk, campaign.scheduled_at.isoformat())
        return campaign
    return _begin(campaign, user=user)


def raise_invalid(action: str, campaign: Campaign) -> None:
    raise InvalidTransition(f"Cannot {action} a campaign that is {campaign.get_status_display().lower()}.")


def campaign_unschedule(*, campaign: Campaign, user: Any = None) -> Campaign:
    with transaction.atomic():
        campaign.unschedule()
        CampaignActivity.record(campaign, "edited", "Unscheduled: back to draft.", user=user)
        broadcast_stats_on_commit(campaign.pk)
    return campaign


def campaign_pause(*, campaign: Campaign, reason: str = "", user: Any = None) -> Campaign:
    """preparing or running -> paused. Senders claim nothing once this commits (their claim
    requires a running campaign); a send already in flight completes and is recorded. An
    audience snapshot being taken goes on to its end and leaves the campaign paused. USER:
    the operator who paused it; REASON: why, when it was not an operator."""
    with transaction.atomic():
        campaign.pause(reason)
        CampaignActivity.record(campaign, "paused", reason or "Paused.", user=user)
        broadcast_stats_on_commit(campaign.pk)
    log.info("[CAMPAIGN] %s paused", campaign.pk)
    return campaign


def campaign_resume(*, campaign: Campaign, user: Any = None) -> Campaign:
    # Read fresh: the status webhook that paused it may have been followed by another.
    template = MessageTemplate.objects.filter(pk=campaign.template_id).first() if campaign.template_id else None
    if template is not None and not template.is_approved:
        raise ServiceError(
            template.blocked_reason() + " Resume once it is approved again.", code="template_not_approved"
        )
    with transaction.atomic():
        campaign.resume()
        CampaignActivity.record(campaign, "resumed", "Resumed.", user=user)
        if campaign.status == Campaign.Status.RUNNING:
            Campaign.objects.filter(pk=campaign.pk).update(dispatch_seen_at=timezone.now())
            _enqueue_senders(campaign.pk)
        # Back to preparing: the snapshot's run is still on it (or the sweeper restarts it).
        broadcast_stats_on_commit(campaign.pk)
    log.info("[CAMPAIGN] %s resumed", campaign.pk)
    return campaign


def deliveries_retry_failed(*, campaign: Campaign, user: Any = None, now: datetime | None = None) -> int:
    """Send CAMPAIGN's failed deliveries that may succeed on a second try
    (`DeliveryQuerySet.retryable`) again: they go back to pending and a finished campaign
    runs again; a paused one sends them when resumed. Returns how many.

    Never requeued: `unknown` outcomes (they may have been sent), opted-out or erased
    contacts, codes that say stop. Each keeps its attempts (the sender counts one more when
    it claims it) and its history: the failure it had goes to a `retry` DeliveryEvent, in
    the same statement that moves it, so nothing but the row's current error is cleared."""
    now = now or timezone.now()
    _retry_allowed(Campaign.objects.get(pk=campaign.pk))
    with transaction.atomic():
        # Deliveries first, then the campaign row, as every status change locks them (a
        # webhook moving one of these deliveries meanwhile cannot deadlock with this).
        retried = _requeue_failed(campaign, now)
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        _retry_allowed(campaign)  # cancelled meanwhile: everything rolls back
        deltas = Delivery.stat_deltas(Delivery.Status.FAILED, Delivery.Status.PENDING)
        Campaign.add_to_stats(campaign.pk, deltas, retried)
        reopened = bool(retried) and campaign.status == Campaign.Status.FINISHED
        if reopened:
            campaign.reopen()
        if retried and campaign.status == Campaign.Status.RUNNING:
            Campaign.objects.filter(pk=campaign.pk).update(dispatch_seen_at=timezone.now())
            _enqueue_senders(campaign.pk)
        message = f"{retried} failed deliveries queued again"
        if reopened:
            message += "; the campaign runs again"
        CampaignActivity.record(campaign, "retry", message, user=user, requeued=retried)
        broadcast_stats_on_commit(campaign.pk)
    log.info("[CAMPAIGN] %s: %d failed deliveries queued again", campaign.pk, retried)
    return retried


def _retry_allowed(campaign: Campaign) -> None:
    if campaign.status not in (Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.FINISHED):
        raise InvalidTransition("Only a running, paused or finished campaign can retry its failed deliveries.")


def _requeue_failed(campaign: Campaign, now: datetime) -> int:
    """Move CAMPAIGN's retryable failed deliveries to pending in one statement (the caller
    counts them), writing each one's failure to its event history. Returns how many moved."""
    retryable = Delivery.objects.filter(campaign_id=campaign.pk).retryable(now).values("pk")
    if db.vendor != "postgresql":
        return _requeue_failed_portable(retryable, now)
    select_sql, select_params = retryable.query.sql_with_params()
    delivery, event = Delivery._meta.db_table, DeliveryEvent._meta.db_table
    # The self-join reads each row as it was before the UPDATE (RETURNING gives the new row
    # only); `d.status` is checked again on rows that changed meanwhile (read committed).
    sql = f"""
        WITH moved AS (
            UPDATE {delivery} AS d
            SET status = %s, error_code = '', error_message = '', failed_at = NULL, claimed_at = NULL,
                updated_at = %s
            FROM {delivery} AS old
            WHERE old.id = d.id AND d.status = %s AND d.id IN ({select_sql})
            RETURNING d.id, d.tenant_id, old.error_code, old.error_message
        ), history AS (
            INSERT INTO {event} (tenant_id, delivery_id, status, occurred_at, received_at, event,
                                 error_code, error_message)
            SELECT tenant_id, id, %s, %s, %s, 'retry', error_code, error_message FROM moved
        )
        SELECT count(*) FROM moved
    """
    params = [Delivery.Status.PENDING, now, Delivery.Status.FAILED, *select_params, Delivery.Status.PENDING, now, now]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _requeue_failed_portable(retryable: Any, now: datetime) -> int:
    """`_requeue_failed` without data-modifying CTEs (SQLite, the embedded mode: one writer
    at a time, so the rows read first are the rows moved)."""
    failures = Delivery.objects.filter(pk__in=retryable).values_list("pk", "tenant_id", "error_code", "error_message")
    DeliveryEvent.objects.bulk_create(
        DeliveryEvent(
            tenant_id=tenant_id,
            delivery_id=pk,
            status=Delivery.Status.PENDING,
            occurred_at=now,
            received_at=now,
            event="retry",
            error_code=code,
            error_message=message,
        )
        for pk, tenant_id, code, message in failures.iterator(chunk_size=2000)
    )
    return Delivery.objects.filter(pk__in=retryable, status=Delivery.Status.FAILED).update(
        status=Delivery.Status.PENDING, error_code="", error_message="", failed_at=None, claimed_at=None, updated_at=now
    )


def campaign_cancel(*, campaign: Campaign, user: Any = None) -> Campaign:
    """Stop for good: unsent (pending) deliveries become cancelled. A send in flight completes;
    an audience snapshot being taken stops, the chunk it is writing rolled back (so no
    delivery it makes stays pending)."""
    with transaction.atomic():
        campaign.cancel()
        cancelled = Delivery.move_many(
            campaign_id=campaign.pk, from_status=Delivery.Status.PENDING, to_status=Delivery.Status.CANCELLED
        )
        message = f"Cancelled: {cancelled} unsent deliveries cancelled."
        CampaignActivity.record(campaign, "cancelled", message, user=user, cancelled=cancelled)
        broadcast_stats_on_commit(campaign.pk)
    log.info("[CAMPAIGN] %s cancelled (%d unsent deliveries cancelled)", campaign.pk, cancelled)
    campaign.refresh_from_db()
    return campaign


# --- Operator actions: test send, duplicate, export ------------------------------------------

# A test send waits this long for the connection's rate budget before refusing.
TEST_SEND_MAX_WAIT = 2.0


@dataclass
class SentTest:
    phone: str
    text: str
    message_id: str
    connection: Connection


def campaign_message_for(*, campaign: Campaign, contact: Contact) -> OutgoingMessage:
    """The message CAMPAIGN would send CONTACT: its text rendered for the contact as the
    audience snapshot renders it, with the campaign's media. The one hook the test send asks;
    for a template campaign, the template with its parameters rendered for the contact."""
    from campaigns.sending import MediaUrl, template_message

    template = campaign.template
    if template is not None:
        if not template.is_approved:
            raise Conflict(template.blocked_reason(), code="template_not_approved")
        text, sources = snapshot.template_sources(template, campaign.template_params or {})
        values = snapshot.render_template_values(
            sources, name=contact.name, phone=contact.phone, attributes=contact.attributes or {}
        )
        return OutgoingMessage(
            phone=contact.phone,
            text=render_message(text, contact),
            template=template_message(template, values, MediaUrl(campaign, header=True).get()),
        )
    return OutgoingMessage(
        phone=contact.phone, text=render_message(campaign.message, contact), media=MediaUrl(campaign).get()
    )


def _test_connection(campaign: Campaign) -> Connection:
    """The connection a test send goes out on: the campaign's first one."""
    connection = campaign.connection
    if not connection.is_active:
        raise Conflict("The campaign's connection is disabled.", code="connection_inactive")
    reason = _provider(connection.provider).disabled_reason()
    if reason:
        raise Conflict(reason, code="provider_disabled")
    return connection


def _take_rate_budget(connection: Connection) -> None:
    """One send from CONNECTION's rate budget (shared with its campaigns' senders), waiting a
    moment at most; raises ServiceError `rate_limited` (429) otherwise."""
    limiter = ratelimit.limiter()
    deadline = time.monotonic() + TEST_SEND_MAX_WAIT
    while True:
        grant = limiter.acquire(
            str(connection.pk), limit=connection.rate_per_minute, window=ratelimit.window_seconds(), n=1
        )
        if grant.granted:
            return
        if time.monotonic() + grant.wait > deadline:
            raise ServiceError(
                f"The connection's rate limit is reached; try again in {max(1, round(grant.wait))} s.",
                code="rate_limited",
                status=429,
            )
        time.sleep(grant.wait)


def campaign_test_send(*, campaign: Campaign, phone: str, contact_id: int | None = None, user: Any = None) -> SentTest:
    """Send CAMPAIGN's message now to PHONE, rendered for contact CONTACT_ID (of the
    campaign's tenant), or for the tenant's contact with that phone, or for a sample contact
    with only that phone. Through the campaign's first connection, within its rate limit; no
    delivery is made and no counter changes. Recorded in the activity log, failures too.
    Raises InvalidTransition for a cancelled or finished campaign, ServiceError
    `provider_error` (502) when the provider refuses it."""
    if campaign.status in (Campaign.Status.CANCELLED, Campaign.Status.FINISHED):
        raise_invalid("send a test of", campaign)
    try:
        e164 = normalize_phone(phone)
    except ValueError as exc:
        raise ServiceError(f"{exc}: {phone!r}", code="invalid_phone", status=422) from None
    contacts = Contact.objects.for_tenant(campaign.tenant)
    if contact_id is not None:
        contact = contacts.filter(pk=contact_id).first()
        if contact is None:
            raise ServiceError("No such contact.", code="invalid_contact", status=422)
    else:
        contact = contacts.filter(phone=e164).first() or Contact(tenant=campaign.tenant, phone=e164, name="")
    connection = _test_connection(campaign)
    message = campaign_message_for(campaign=campaign, contact=contact)
    message = OutgoingMessage(phone=e164, text=message.text, media=message.media, template=message.template)
    _take_rate_budget(connection)
    try:
        result = provider_for(connection).send(message)
    except ProviderError as error:
        CampaignActivity.record(
            campaign,
            "test_send",
            f"Test send to {e164} failed: {error}"[:2000],
            user=user,
            phone=e164,
            connection=str(connection.pk),
            error_code=error.code,
            ok=False,
        )
        log.info("[CAMPAIGN] %s: test send refused (%s %s)", campaign.pk, error.kind, error.code)
        raise ServiceError(
            f"The provider refused the test message: {error}", code="provider_error", status=502
        ) from None
    CampaignActivity.record(
        campaign,
        "test_send",
        f"Test message sent to {e164} through {connection.name}.",
        user=user,
        phone=e164,
        connection=str(connection.pk),
        message_id=result.message_id,
        contact=contact.pk,
        ok=True,
    )
    log.info("[CAMPAIGN] %s: test message sent through connection %s", campaign.pk, connection.pk)
    return SentTest(phone=e164, text=message.text, message_id=result.message_id, connection=connection)


# Campaign fields a duplicate does not copy: its lifecycle, counters, snapshot and times.
DUPLICATE_SKIPS = frozenset(
    {
        "id",
        "status",
        "pause_reason",
        "consecutive_errors",
        "scheduled_at",
        "created_by",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "dispatch_seen_at",
        "waiting_reason",
        "next_send_at",
        "prepared_at",
        "audience_count",
        "prepare_cursor",
        "prepare_owner",
    }
)


def campaign_duplicate(*, campaign: Campaign, user: Any = None) -> Campaign:
    """A new draft with CAMPAIGN's settings and audience rules: every concrete editable field
    (fields added later are copied too) and many-to-many relations, without its status,
    stats, schedule, snapshot or times; named "… (copy)". Recorded on both campaigns."""
    copy = Campaign(status=Campaign.Status.DRAFT, created_by=acting_user(user))
    for field in Campaign._meta.concrete_fields:
        if field.primary_key or field.name in DUPLICATE_SKIPS or field.name.startswith("stat_"):
            continue
        if not field.editable and field.name != "tenant":
            continue
        setattr(copy, field.attname, getattr(campaign, field.attname))
    max_length = Campaign._meta.get_field("name").max_length or 200
    suffix = " (copy)"
    copy.name = campaign.name[: max_length - len(suffix)] + suffix
    with transaction.atomic():
        copy.save(force_insert=True)
        for m2m in Campaign._meta.many_to_many:
            through: Any = m2m.remote_field.through
            if through._meta.auto_created:
                getattr(copy, m2m.name).set(getattr(campaign, m2m.name).all())
                continue
            # An explicit through model: copy its rows, pointing at the duplicate.
            source = m2m.m2m_field_name()  # type: ignore[attr-defined]
            rows = []
            for row in through.objects.filter(**{source: campaign}):
                row.pk = None
                row._state.adding = True
                setattr(row, source, copy)
                rows.append(row)
            through.objects.bulk_create(rows)
        CampaignActivity.record(
            copy, "duplicated", f"Duplicated from {campaign.name}.", user=user, source=str(campaign.pk)
        )
        CampaignActivity.record(campaign, "duplicated", f"Duplicated as {copy.name}.", user=user, copy=str(copy.pk))
    log.info("[CAMPAIGN] %s duplicated as %s", campaign.pk, copy.pk)
    return copy


EXPORT_COLUMNS = [
    "phone",
    "contact_name",
    "status",
    "connection",
    "variant",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "replied_at",
    "error_code",
    "error",
]
EXPORT_CHUNK_ROWS = 2000
EXPORT_SEPARATORS = (",", ";")
# Cells a spreadsheet would read as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_separator(value: str) -> str:
    """VALUE when it is a separator the export takes (`,`, or `;` for locales whose decimal
    comma makes spreadsheets expect it); raises ServiceError `invalid_sep` otherwise."""
    if value not in EXPORT_SEPARATORS:
        raise ServiceError(
            "sep must be , or ; (a semicolon for a Brazilian spreadsheet).", code="invalid_sep", status=422
        )
    return value


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def deliveries_csv_chunk(campaign: Campaign, *, after: int, size: int = EXPORT_CHUNK_ROWS) -> list[tuple[Any, ...]]:
    """Up to SIZE of CAMPAIGN's deliveries with ids above AFTER, in id order, as tuples
    (id first, then the export's columns' values)."""
    rows = (
        Delivery.objects.filter(tenant_id=campaign.tenant_id, campaign_id=campaign.pk, pk__gt=after)
        .order_by("pk")
        .values_list(
            "pk",
            "phone",
            "contact__name",
            "status",
            "connection__name",
            "variant",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "replied_at",
            "error_code",
            "error_message",
        )
    )
    return list(rows[:size])


async def campaign_deliveries_csv(*, campaign: Campaign, sep: str = ",") -> AsyncIterator[str]:
    """Every delivery of CAMPAIGN as CSV (EXPORT_COLUMNS, SEP between cells), with a UTF-8
    byte order mark so that Excel reads the accents, read in keyset-paginated chunks as the
    response goes out: memory stays bounded whatever the campaign's size. Asynchronous:
    under ASGI Django reads a synchronous iterator whole before sending anything."""
    sep = export_separator(sep)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep)
    writer.writerow(EXPORT_COLUMNS)
    yield "\ufeff" + out.getvalue()
    # Deliveries made before rotation recorded their connection went out on the campaign's.
    fallback = await sync_to_async(lambda: campaign.connection.name)()
    fetch = sync_to_async(deliveries_csv_chunk)
    after = 0
    while rows := await fetch(campaign, after=after):
        out.seek(0)
        out.truncate()
        for _pk, phone, name, status, conn, variant, sent, delivered, read, failed, replied, code, error in rows:
            went_out = sent is not None or failed is not None
            writer.writerow(
                [
                    phone,
                    _cell(name or ""),
                    status,
                    _cell(conn or (fallback if went_out else "")),
                    "" if variant is None else variant,
                    _when(sent),
                    _when(delivered),
                    _when(read),
                    _when(failed),
                    _when(replied),
                    _cell(code),
                    _cell(error),
                ]
            )
        after = rows[-1][0]
        del rows
        yield out.getvalue()


def campaign_export_filename(campaign: Campaign) -> str:
    """The export's download name (ASCII: it goes in a header)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", campaign.name).strip("-").lower()[:50] or "campaign"
    return f"{slug}-{str(campaign.pk)[:8]}-deliveries.csv"


def campaign_finish_if_done(*, campaign_id: Any) -> bool:
    """`Campaign.finish_if_done`, with the live update. True when it finished."""
    finished = Campaign.finish_if_done(campaign_id)
    if finished:
        broadcast_stats_on_commit(campaign_id)
    return finished


# --- Periodic work ----------------------------------------------------------------------------


def campaigns_start_due(*, now: datetime | None = None) -> list[UUID]:
    """Start (prepare, then run) every scheduled campaign whose time has come; returns their
    ids. Two workers may race: the conditional status update lets one win, the other skips."""
    now = now or timezone.now()
    started = []
    due = Campaign.objects.filter(status=Campaign.Status.SCHEDULED, scheduled_at__lte=now).order_by("scheduled_at")
    for campaign in due.select_related("tenant", "template", "connection")[:50]:
        try:
            campaign_template_check(campaign=campaign)
        except ServiceError as exc:
            # The template stopped being sendable while it waited: back to draft, and why.
            with transaction.atomic():
                try:
                    campaign.unschedule()
                except InvalidTransition:
                    continue
                CampaignActivity.record(campaign, CampaignActivity.Kind.TEMPLATE, f"Not started: {exc.message}")
                broadcast_stats_on_commit(campaign.pk)
            continue
        try:
            _begin(campaign)
        except Conflict:
            continue
        started.append(campaign.pk)
    return started


def deliveries_sweep_stale(*, older_than: timedelta | None = None) -> int:
    """Move deliveries stuck in `sending` (their worker died between the provider call and
    recording the answer) to `unknown`. Never re-sends: the provider may have sent it.
    Returns how many moved."""
    if older_than is None:
        older_than = timedelta(seconds=settings.CAMPAIGN_SENDING_STALE_SECONDS)
    cutoff = timezone.now() - older_than
    stale = list(
        Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lt=cutoff).values_list("pk", "campaign_id")[
            :5000
        ]
    )
    moved = 0
    campaigns: set[Any] = set()
    for delivery_id, campaign_id in stale:
        if Delivery.move(
            delivery_id,
            from_status=Delivery.Status.SENDING,
            to_status=Delivery.Status.UNKNOWN,
            error_code="interrupted",
            error_message="The sender stopped between the provider call and recording its answer: "
            "the message may or may not have been sent. It is not re-sent automatically.",
        ):
            moved += 1
            campaigns.add(campaign_id)
    for campaign_id in campaigns:
        campaign_finish_if_done(campaign_id=campaign_id)
        broadcast_stats_on_commit(campaign_id)
    if moved:
        log.warning("[CAMPAIGN] %d delivery(ies) left in sending moved to unknown", moved)
    return moved


def campaigns_kick_stalled(*, stalled_for: timedelta = timedelta(seconds=60)) -> list[UUID]:
    """Re-enqueue senders for running campaigns nobody has worked on for STALLED_FOR (the
    broker lost their messages), re-enqueue audience snapshots whose run went silent
    (`campaigns_kick_stalled_preparations`), clean up what cancelled campaigns left pending,
    and finish running campaigns with nothing left. Returns the ids kicked."""
    now = timezone.now()
    kicked = campaigns_kick_stalled_preparations()
    for campaign_id in Campaign.objects.filter(status=Campaign.Status.RUNNING, stat_pending=0).values_list(
        "pk", flat=True
    ):
        campaign_finish_if_done(campaign_id=campaign_id)
    stale = Campaign.objects.filter(status=Campaign.Status.RUNNING, stat_pending__gt=0).exclude(
        dispatch_seen_at__gte=now - stalled_for
    )
    for campaign_id in stale.values_list("pk", flat=True):
        claimed = (
            Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.RUNNING)
            .exclude(dispatch_seen_at__gte=now - stalled_for)
            .update(dispatch_seen_at=now)
        )
        if claimed:
            with transaction.atomic():
                _enqueue_senders(campaign_id)
            kicked.append(campaign_id)
    for campaign_id in (
        Delivery.objects.filter(status=Delivery.Status.PENDING, campaign__status=Campaign.Status.CANCELLED)
        .values_list("campaign_id", flat=True)
        .distinct()
    ):
        Delivery.move_many(
            campaign_id=campaign_id, from_status=Delivery.Status.PENDING, to_status=Delivery.Status.CANCELLED
        )
    if kicked:
        log.warning("[CAMPAIGN] re-enqueued senders or snapshots for %d stalled campaign(s)", len(kicked))
    return kicked


def campaigns_kick_stalled_preparations() -> list[UUID]:
    """Re-enqueue the audience snapshot of every campaign still preparing (or paused before
    its snapshot ended) whose heartbeat is older than CAMPAIGN_PREPARE_STALE_SECONDS: its
    worker crashed, or the broker lost its message. The stale owner is dropped in the same
    conditional UPDATE, so the new run claims it at once and the old one, if it was only
    slow, stops at its next chunk. Returns the ids re-enqueued."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CAMPAIGN_PREPARE_STALE_SECONDS)
    stale = Campaign.objects.filter(
        prepare_cursor__isnull=False, status__in=[Campaign.Status.PREPARING, Campaign.Status.PAUSED]
    ).exclude(dispatch_seen_at__gte=cutoff)
    kicked = []
    for campaign_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            if stale.filter(pk=campaign_id).update(prepare_owner=None, dispatch_seen_at=now):
                _enqueue_preparation(campaign_id)
                kicked.append(campaign_id)
    return kicked


# --- Recounting stats -------------------------------------------------------------------------

# Which deliveries each counter counts, read off Delivery.COUNTERS (what the live deltas
# use), so the recount cannot hold a second, drifting copy of the rule it checks; replies
# are counted by `replied_at` (set once, by `campaigns.inbound`).
STAT_FILTERS: dict[str, Q | None] = {
    name: None if name == "total" else Q(status__in=[s for s, names in Delivery.COUNTERS.items() if name in names])
    for name in Campaign.STAT_NAMES
    if name != "replied"
}
STAT_FILTERS["replied"] = Q(replied_at__isnull=False)


@dataclass
class StatsDrift:
    campaign_id: UUID
    name: str
    before: dict[str, int]
    after: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.campaign_id), "name": self.name, "before": self.before, "after": self.after}


def _chunks(items: Sequence[UUID], size: int) -> Iterator[Sequence[UUID]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def campaign_recalc_stats(*, campaign_ids: Iterable[UUID], fix: bool = True, batch_size: int = 200) -> list[StatsDrift]:
    """Recount the stats of CAMPAIGN_IDS from their deliveries, one aggregate query per
    batch; returns the campaigns whose stored counters differed and, with FIX, corrects
    them. The campaign rows are locked first: a delivery moving meanwhile either committed
    before the count (and is in it) or waits and adds its delta after ours."""
    ids = sorted(set(campaign_ids), key=str)
    drifts: list[StatsDrift] = []
    names = [f"stat_{n}" for n in Campaign.STAT_NAMES]
    aggregates = {n: Count("pk", filter=q) if q is not None else Count("pk") for n, q in STAT_FILTERS.items()}
    for batch in _chunks(ids, batch_size):
        with transaction.atomic():
            stored = {
                row["id"]: row
                for row in Campaign.objects.select_for_update().filter(pk__in=batch).values("id", "name", *names)
            }
            counted: dict[UUID, dict[str, Any]] = {
                row["campaign_id"]: dict(row)
                for row in Delivery.objects.filter(campaign_id__in=batch)
                .values("campaign_id")
                .annotate(**aggregates)
                .order_by()
            }
            for campaign_id, row in stored.items():
                before = {n: row[f"stat_{n}"] for n in Campaign.STAT_NAMES}
                found: dict[str, Any] = counted.get(campaign_id) or {}
                after = {n: int(found.get(n) or 0) for n in Campaign.STAT_NAMES}
                if before == after:
                    continue
                drifts.append(StatsDrift(campaign_id, row["name"], before, after))
                if fix:
                    Campaign.objects.filter(pk=campaign_id).update(**{f"stat_{n}": v for n, v in after.items()})
                    broadcast_stats_on_commit(campaign_id)
    if fix and drifts:
        log.warning("[CAMPAIGN] recalculated drifted counters of %d campaign(s)", len(drifts))
    return drifts


# --- Operator consent actions and profile pictures --------------------------------------------


class ReasonRequired(ServiceError):
    """Opting a contact back in without saying why."""

    code = "reason_required"


def contact_opt_out(*, contact: Contact, source: str, user: Any = None, reason: str = "") -> bool:
    """An operator (or API client: SOURCE) opts CONTACT out; see contact_consent_change.
    Returns False when it already was opted out."""
    changed = contact_consent_change(contact=contact, opted_out=True, source=source, user=user, reason=reason.strip())
    if changed:
        log.info("[CONSENT] contact %s opted out by user %s (%s)", contact.pk, getattr(user, "pk", None), source)
    return changed


def contact_opt_in(*, contact: Contact, source: str, user: Any = None, reason: str) -> bool:
    """Opt CONTACT back in: only with a REASON (LGPD: the record says why consent came back),
    which the ConsentEvent keeps and the log names. Raises ReasonRequired without one.
    Returns False when it was not opted out."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("Say why this contact may receive messages again (a reason is required).")
    changed = contact_consent_change(contact=contact, opted_out=False, source=source, user=user, reason=reason)
    if changed:
        log.info(
            "[CONSENT] contact %s opted back in by user %s (%s): %s",
            contact.pk,
            getattr(user, "pk", None),
            source,
            reason[:200],
        )
    return changed


def contact_avatar_connection(contact: Contact) -> Connection | None:
    """The connection to ask for CONTACT's profile picture: the one it last wrote to or was
    sent from, else any active one of its tenant whose gateway has profile pictures."""
    able = [name for name, cls in registry.items() if cls.supports_profile_pictures]
    usable = Connection.objects.filter(tenant_id=contact.tenant_id, is_active=True, provider__in=able)
    recent = (
        InboundMessage.objects.filter(contact=contact, connection__in=usable)
        .order_by("-received_at")
        .values_list("connection_id", flat=True)
        .first()
    ) or (
        # The connection a delivery went out on (campaigns may rotate), else its campaign's.
        Delivery.objects.filter(contact=contact)
        .annotate(via=Coalesce("connection_id", "campaign__connection_id"))
        .filter(via__in=usable.values("pk"))
        .order_by("-id")
        .values_list("via", flat=True)
        .first()
    )
    if recent is not None:
        return usable.filter(pk=recent).first()
    return usable.order_by("created_at").first()


def contact_avatar_refresh(*, contact: Contact, force: bool = False) -> str:
    """CONTACT's profile picture URL (the gateway's, "" when it has none), asked of its
    gateway when last asked more than PROFILE_PICTURE_TTL ago (or FORCE). Concurrent
    callers ask once: the first claims the check with a conditional UPDATE, the others get
    what is known. A gateway that fails leaves "" until the next check."""
    now = timezone.now()
    stale = Q(avatar_checked_at__isnull=True) | Q(
        avatar_checked_at__lt=now - timedelta(seconds=settings.PROFILE_PICTURE_TTL)
    )
    claim = Contact.objects.filter(pk=contact.pk) if force else Contact.objects.filter(stale, pk=contact.pk)
    if not claim.update(avatar_checked_at=now):
        contact.refresh_from_db(fields=["avatar_source_url", "avatar_checked_at"])
        return contact.avatar_source_url
    url = ""
    connection = contact_avatar_connection(contact)
    if connection is not None:
        try:
            url = provider_for(connection).profile_picture_url(contact.phone) or ""
        except (ProviderError, ValueError) as exc:
            log.info("[AVATAR] contact %s: %s did not answer (%s)", contact.pk, connection.pk, exc.__class__.__name__)
    Contact.objects.filter(pk=contact.pk).update(avatar_source_url=url)
    contact.avatar_source_url, contact.avatar_checked_at = url, now
    return url


def contact_avatar_due(contact: Contact) -> bool:
    """Whether CONTACT's gateway should be asked for its picture (never asked, or longer ago
    than PROFILE_PICTURE_TTL)."""
    checked = contact.avatar_checked_at
    return checked is None or timezone.now() - checked >= timedelta(seconds=settings.PROFILE_PICTURE_TTL)


def contact_avatars_refresh_later(*, contacts: Iterable[Contact]) -> list[int]:
    """Ask, in a worker once the transaction commits, for the pictures of those CONTACTS
    (shown on a page) that are due. Returns their ids (nothing is sent when none is)."""
    from campaigns.tasks import refresh_contact_avatars

    due = [c.pk for c in contacts if contact_avatar_due(c)]
    if due:
        transaction.on_commit(lambda: refresh_contact_avatars.send(due))
    return due


def contact_avatars_refresh(*, contact_ids: Iterable[int]) -> None:
    """`contact_avatar_refresh` for each of CONTACT_IDS still due (a page asked for them)."""
    for contact in Contact.objects.filter(pk__in=list(contact_ids)):
        if contact_avatar_due(contact):
            contact_avatar_refresh(contact=contact)


def contact_avatar_forget(*, contact: Contact) -> None:
    """The stored picture URL stopped working (WhatsApp's CDN URLs expire): ask again next time."""
    Contact.objects.filter(pk=contact.pk).update(avatar_source_url="", avatar_checked_at=None)


def consent_settings_save(*, tenant: Tenant, user: Any = None, **values: Any) -> ConsentSettings:
    """Store TENANT's keywords and confirmation texts (keywords trimmed, without repeats).
    Raises ServiceError `keyword_overlap` when a keyword would both opt out and in."""
    for field in ("opt_out_keywords", "opt_in_keywords"):
        if field in values:
            values[field] = clean_tags(values[field] or [])
    with transaction.atomic():
        current, _ = ConsentSettings.objects.select_for_update().get_or_create(tenant=tenant)
        for field, value in values.items():
            setattr(current, field, value)
        overlap = {normalize_keyword(k) for k in current.opt_out_keywords} & {
            normalize_keyword(k) for k in current.opt_in_keywords
        }
        if overlap:
            raise ServiceError(
                f"A keyword cannot both opt out and re-subscribe: {', '.join(sorted(overlap))}.",
                code="keyword_overlap",
            )
        current.save()
    log.info("[CONSENT] keyword settings of tenant %s changed by user %s", tenant.pk, getattr(user, "pk", None))
    return current
