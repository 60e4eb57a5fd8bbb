"""Contacts, WhatsApp connections, campaigns, deliveries and their status events.

Counters: a campaign's `stat_*` columns change only in `Delivery.move`, in the same
transaction as the delivery's conditional status UPDATE, with F() expressions, so they
never drift; `manage.py recalc_campaign_stats` proves it.
"""

from __future__ import annotations

import json
import logging
import operator
import re
import secrets
import string
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from functools import reduce
from typing import Any, ClassVar

import phonenumbers
from django.conf import settings
from django.db import OperationalError, connections, models, transaction
from django.db.models import F, Q, Subquery, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from sense.errors import Conflict
from sense.models import Tenant, TenantOwned, TenantQuerySet

log = logging.getLogger("sense.campaigns")


def new_webhook_token() -> str:
    return secrets.token_urlsafe(24)


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """RAW as E.164 (`+5511999999999`); numbers without a country code are read in REGION
    (default DEFAULT_PHONE_REGION). Raises ValueError for anything that is not a valid number."""
    text = (raw or "").strip()
    if not text:
        raise ValueError("missing phone")
    try:
        number = phonenumbers.parse(text, region or settings.DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise ValueError("invalid phone") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("invalid phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags stripped, without empties or repeats, in their first order."""
    seen: dict[str, None] = {}
    for tag in tags:
        tag = str(tag).strip()
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


class ContactQuerySet(TenantQuerySet):
    def for_tenant(self, tenant: Any) -> ContactQuerySet:  # typed so that the filters below chain
        return self.filter(tenant=tenant)

    def with_any_tag(self, tags: list[str]) -> ContactQuerySet:
        """Contacts having at least one of TAGS (all contacts when TAGS is empty)."""
        if not tags:
            return self
        if connections[self.db].vendor == "sqlite":
            # SQLite has no JSON containment: match each quoted tag in the list's JSON text.
            qs = self.annotate(_tags_text=Cast("tags", models.TextField()))
            return qs.filter(reduce(operator.or_, (Q(_tags_text__contains=json.dumps(t)) for t in tags)))
        return self.filter(reduce(operator.or_, (Q(tags__contains=[t]) for t in tags)))

    def sendable(self) -> ContactQuerySet:
        return self.filter(opted_out=False)


class Contact(TenantOwned):
    phone = models.CharField(_("phone"), max_length=20, help_text=_("E.164, e.g. +5511999999999"))
    name = models.CharField(_("name"), max_length=200, blank=True)
    attributes = models.JSONField(_("attributes"), default=dict, blank=True)
    tags = models.JSONField(_("tags"), default=list, blank=True)
    opted_out = models.BooleanField(_("opted out"), default=False)
    # The latest consent change (ConsentEvent holds the whole history).
    opted_out_at = models.DateTimeField(_("opted out at"), null=True, blank=True)
    opt_out_source = models.CharField(_("opt-out source"), max_length=16, blank=True, db_default="")

    class Source(models.TextChoices):
        MANUAL = "manual", _("Added by an operator")
        IMPORT = "import", _("CSV import")
        API = "api", _("API")
        INBOUND = "inbound", _("Wrote to us")

    source = models.CharField(
        _("source"), max_length=16, choices=Source.choices, default=Source.MANUAL, db_default=Source.MANUAL
    )
    # The provider's profile picture URL (never shown: the browser sees it through the media
    # proxy) and when it was last asked for (PROFILE_PICTURE_TTL).
    avatar_source_url = models.TextField(blank=True, editable=False, db_default="")
    avatar_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()  # type: ignore[misc]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "phone"], name="contact_unique_tenant_phone")]
        # The audience snapshot walks one tenant's contacts in chunks of ids.
        indexes = [models.Index(fields=["tenant", "id"], name="contact_tenant_id")]
        ordering = ["name", "phone"]
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")

    def __str__(self) -> str:
        return f"{self.name} ({self.phone})" if self.name else self.phone


class LostClaim(Exception):
    """Another worker has taken over the import this one was working on."""


class ContactImport(TenantOwned):
    """A CSV import done by a worker: the uploaded file (in storage, so any worker can read
    it), its progress and its outcome.

    A worker claims the import with a conditional UPDATE (`claim`). Each chunk of rows is
    upserted in one transaction that first locks this row for the claim holder
    (`lock_claim`) and ends by recording the chunk (`record_chunk`): `processed`, `offset`
    and the counters always describe exactly what is committed, so a worker that dies is
    replaced (the sweeper finds the silent claim) and its successor goes on from `offset`.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        FINISHED = "finished", _("Finished")
        FAILED = "failed", _("Failed")

    MAX_REPORTED_ERRORS = 1000

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    file_key = models.CharField(max_length=500, editable=False)
    original_name = models.CharField(_("file name"), max_length=255)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Rows after the header: counted from the file's lines when uploaded, exact once finished.
    total = models.PositiveIntegerField(_("rows"), default=0)
    processed = models.PositiveIntegerField(_("rows read"), default=0)
    created = models.PositiveIntegerField(_("contacts created"), default=0)
    updated = models.PositiveIntegerField(_("contacts updated"), default=0)
    error_count = models.PositiveIntegerField(_("rows with errors"), default=0)
    errors = models.JSONField(default=list, blank=True, help_text=_("the first 1,000 [{row, error}]"))
    failure = models.TextField(_("failure"), blank=True)
    # Byte of the file where the row after `processed` starts (where a resumed import reads on).
    offset = models.PositiveBigIntegerField(default=0, editable=False)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="contactimport_status_heartbeat")]
        verbose_name = _("contact import")
        verbose_name_plural = _("contact imports")

    def __str__(self) -> str:
        return f"{self.original_name} ({self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.FINISHED, self.Status.FAILED)

    @property
    def errors_filename(self) -> str:
        """The download name of the bad rows' CSV (ASCII: it goes in a header unquoted)."""
        return f"import-{self.pk}-errors.csv"

    @property
    def percent(self) -> float:
        if self.status == self.Status.FINISHED:
            return 100.0
        return min(100.0, 100.0 * self.processed / self.total) if self.total else 0.0

    @classmethod
    def claim(cls, pk: Any, *, stale_after: float) -> ContactImport | None:
        """Take the import for this worker: a queued one, or a running one whose worker has
        been silent for STALE_AFTER seconds. Returns it (with its new claim token) or None
        when someone else holds it or it is done."""
        now = timezone.now()
        token = uuid.uuid4()
        stale = now - timedelta(seconds=stale_after)
        claimable = Q(status=cls.Status.QUEUED) | Q(status=cls.Status.RUNNING, heartbeat_at__lt=stale)
        taken = cls.objects.filter(claimable, pk=pk).update(
            status=cls.Status.RUNNING,
            claim_token=token,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), Value(now)),
        )
        return cls.objects.get(pk=pk) if taken else None

    def _mine(self) -> models.QuerySet[ContactImport]:
        return ContactImport.objects.filter(pk=self.pk, claim_token=self.claim_token, status=self.Status.RUNNING)

    def lock_claim(self) -> None:
        """Inside the chunk's transaction: lock this row, or raise LostClaim when another
        worker holds the import now (its claim waits for our commit, then sees us alive)."""
        if not self._mine().select_for_update().exists():
            raise LostClaim(str(self.pk))

    def record_chunk(
        self, *, last_row: int, offset: int, created: int, updated: int, errors: list[dict[str, Any]]
    ) -> None:
        """Count a chunk that ends at row LAST_ROW (byte OFFSET), in its transaction."""
        room = self.MAX_REPORTED_ERRORS - len(self.errors)
        fields: dict[str, Any] = {
            "processed": last_row - 1,
            "offset": offset,
            "created": F("created") + created,
            "updated": F("updated") + updated,
            "error_count": F("error_count") + len(errors),
            "heartbeat_at": timezone.now(),
        }
        if errors and room > 0:
            self.errors = [*self.errors, *errors[:room]]
            fields["errors"] = self.errors
        if not self._mine().update(**fields):
            raise LostClaim(str(self.pk))
        self.processed, self.offset = last_row - 1, offset
        self.created += created
        self.updated += updated
        self.error_count += len(errors)

    def finish(self) -> bool:
        """running -> finished; the total becomes the rows really read."""
        now = timezone.now()
        return bool(
            self._mine().update(
                status=self.Status.FINISHED, total=F("processed"), finished_at=now, heartbeat_at=now, claim_token=None
            )
        )

    def fail(self, reason: str) -> bool:
        """running -> failed, with REASON shown to the user."""
        now = timezone.now()
        return bool(
            self._mine().update(
                status=self.Status.FAILED, failure=reason, finished_at=now, heartbeat_at=now, claim_token=None
            )
        )

    def release(self) -> bool:
        """running -> queued, progress kept: a retry of the job may claim it at once."""
        return bool(self._mine().update(status=self.Status.QUEUED, claim_token=None, heartbeat_at=timezone.now()))


class ContactImportError(TenantOwned):
    """One bad row of an import (every one of them: the import keeps only the first 1,000)."""

    contact_import = models.ForeignKey(ContactImport, on_delete=models.CASCADE, related_name="error_rows")
    row = models.PositiveIntegerField()
    error = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["contact_import", "row"], name="contactimporterror_import_row")]
        verbose_name = _("contact import error")
        verbose_name_plural = _("contact import errors")


class Connection(TenantOwned):
    """A tenant's WhatsApp number on a gateway. `credentials` is write-only: never shown,
    never logged. Which credentials a provider takes is declared by its class
    (`campaigns.providers`)."""

    class Provider(models.TextChoices):
        EVOLUTION = "evolution", _("Evolution API")
        CLOUD = "cloud", _("WhatsApp Cloud API")
        SANDBOX = "sandbox", _("Sandbox (simulated)")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=200)
    provider = models.CharField(_("provider"), max_length=16, choices=Provider.choices)
    base_url = models.URLField(_("base URL"), max_length=500)
    credentials = models.JSONField(default=dict, blank=True)
    rate_per_minute = models.PositiveIntegerField(_("messages per minute"), default=60)
    webhook_token = models.CharField(max_length=64, unique=True, default=new_webhook_token, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    # Messages per calendar day in TIME_ZONE, every campaign together (None: no cap). Counted
    # in ConnectionDay, claimed with the deliveries.
    daily_limit = models.PositiveIntegerField(
        _("messages per day"), null=True, blank=True, help_text=_("empty: no daily cap")
    )

    class State(models.TextChoices):  # Evolution's connection.update states
        UNKNOWN = "", _("Unknown")
        OPEN = "open", _("Open")
        CONNECTING = "connecting", _("Connecting")
        CLOSE = "close", _("Closed")
        REFUSED = "refused", _("Refused")

    # The gateway's last word on the number's session (Evolution's connection.update); only
    # an unknown or open connection sends.
    state = models.CharField(_("state"), max_length=16, choices=State.choices, blank=True, default="")
    state_reason = models.CharField(_("state reason"), max_length=200, blank=True, default="")
    state_since = models.DateTimeField(_("state since"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("connection")
        verbose_name_plural = _("connections")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()})"

    def credential(self, name: str) -> str:
        return str(self.credentials.get(name) or "")

    @property
    def can_send(self) -> bool:
        """Active, and not reported down by its gateway (an unknown state sends)."""
        return self.is_active and self.state in (self.State.UNKNOWN, self.State.OPEN)

    def __repr__(self) -> str:  # credentials stay out of reprs, tracebacks and logs
        return f"<Connection {self.pk} {self.provider} {self.name!r}>"


class ConnectionDay(TenantOwned):
    """How many messages a connection handed to its gateway on one day (TIME_ZONE), every
    campaign together: the daily cap's counter, moved in the claim's transaction."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    sent = models.PositiveIntegerField(default=0)
    # When a claim first found the daily limit reached (reported once, in one campaign's log).
    limit_reached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "day"], name="connectionday_unique")]
        verbose_name = _("connection day")
        verbose_name_plural = _("connection days")

    def __str__(self) -> str:
        return f"{self.day}: {self.sent}"


class InvalidTransition(Conflict):
    """A lifecycle change the campaign's current status does not allow (HTTP 409)."""

    code = "invalid_transition"


class Campaign(TenantOwned):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SCHEDULED = "scheduled", _("Scheduled")
        PREPARING = "preparing", _("Preparing")
        RUNNING = "running", _("Running")
        PAUSED = "paused", _("Paused")
        CANCELLED = "cancelled", _("Cancelled")
        FINISHED = "finished", _("Finished")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=200)
    # The first (primary) connection; `extra_connections` are the others it rotates across,
    # all of one provider and tenant (campaigns.services checks).
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="campaigns")
    extra_connections = models.ManyToManyField(
        Connection, blank=True, related_name="+", verbose_name=_("more connections")
    )
    message = models.TextField(_("message"))
    media = models.ForeignKey("media.Asset", null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns")
    # Cloud API message template (issue: templates): which template, each of its parameters
    # -> a text with Sense's placeholders, and the header's media when the header has one.
    template = models.ForeignKey(
        "MessageTemplate", null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns"
    )
    template_params = models.JSONField(_("template parameters"), default=dict, blank=True)
    header_media = models.ForeignKey("media.Asset", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    tags = models.JSONField(_("audience tags"), default=list, blank=True, help_text=_("empty: all contacts"))
    scheduled_at = models.DateTimeField(_("scheduled at"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT)
    pause_reason = models.TextField(_("pause reason"), blank=True)
    consecutive_errors = models.PositiveIntegerField(default=0)
    # The run of template errors (Cloud 132000-132016) in a row: any other outcome ends it.
    template_errors = models.PositiveIntegerField(default=0, editable=False)

    # Safe sending (campaigns.pacing): rotation, random gaps, breaks, typing, window, variants.
    class Rotation(models.TextChoices):
        ROUND_ROBIN = "round_robin", _("Round robin")
        LEAST_USED = "least_used", _("Least used today")

    rotation = models.CharField(_("rotation"), max_length=16, choices=Rotation.choices, default=Rotation.ROUND_ROBIN)
    interval_min_seconds = models.PositiveIntegerField(_("minimum interval (s)"), default=0)
    interval_max_seconds = models.PositiveIntegerField(_("maximum interval (s)"), default=0)
    pause_every = models.PositiveIntegerField(_("break after every N messages"), default=0)
    pause_seconds = models.PositiveIntegerField(_("break length (s)"), default=0)
    typing_seconds = models.PositiveIntegerField(_("typing (s)"), default=0)
    # {"days": [1..7 ISO weekdays], "start": "09:00", "end": "18:00"} in TIME_ZONE; None: any time.
    send_window = models.JSONField(_("send window"), null=True, blank=True)
    skip_dates = models.JSONField(_("skip dates"), default=list, blank=True)
    # Alternative texts (the main message is variant 0), used in turn.
    variants = models.JSONField(_("variants"), default=list, blank=True)

    class Waiting(models.TextChoices):
        WINDOW = "window", _("Outside its send window")
        DAILY_LIMIT = "daily_limit", _("Every connection reached its daily limit")
        CONNECTION = "connection", _("No connection can send")

    # Why a running campaign may not send now, and when it expects to go on (None: unknown).
    waiting_reason = models.CharField(max_length=16, choices=Waiting.choices, blank=True, default="")
    next_send_at = models.DateTimeField(null=True, blank=True)

    stat_total = models.PositiveIntegerField(default=0)
    stat_pending = models.PositiveIntegerField(default=0)
    stat_sent = models.PositiveIntegerField(default=0)
    stat_delivered = models.PositiveIntegerField(default=0)
    stat_read = models.PositiveIntegerField(default=0)
    stat_failed = models.PositiveIntegerField(default=0)
    stat_cancelled = models.PositiveIntegerField(default=0)
    stat_unknown = models.PositiveIntegerField(default=0)
    stat_replied = models.PositiveIntegerField(default=0)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When a worker last worked on (or plans to resume) this campaign: its senders while it
    # runs, its audience snapshot while that is taken. The periodic kick re-enqueues the work
    # whose messages the broker (or a crashed worker) lost.
    dispatch_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The audience snapshot (campaigns.services.campaign_prepare): taken in chunks of contact
    # ids by one worker run at a time (the owner), after the start has answered. The cursor
    # is set only while a snapshot is being taken: contacts with ids up to it are done.
    prepared_at = models.DateTimeField(_("audience prepared at"), null=True, blank=True, editable=False)
    audience_count = models.PositiveIntegerField(
        _("audience"), null=True, blank=True, editable=False, help_text=_("sendable contacts when preparing began")
    )
    prepare_cursor = models.BigIntegerField(null=True, blank=True, editable=False)
    prepare_owner = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "status"], name="campaign_tenant_status"),
            models.Index(fields=["status", "scheduled_at"], name="campaign_status_scheduled"),
        ]
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")

    def __str__(self) -> str:
        return self.name

    # `replied` counts deliveries with a reply (`Delivery.replied_at`), whatever their status.
    STAT_NAMES = ("total", "pending", "sent", "delivered", "read", "failed", "cancelled", "unknown", "replied")

    @property
    def texts(self) -> list[str]:
        """The main message (variant 0) and its variants, in their order."""
        return [self.message, *[str(v) for v in self.variants or []]]

    @property
    def is_paced(self) -> bool:
        return bool(self.interval_max_seconds or self.pause_every and self.pause_seconds)

    def all_connection_ids(self) -> list[Any]:
        """The primary connection's id first, then the others' (by name)."""
        # .all(): served by prefetch_related("extra_connections") on lists.
        extra = sorted(self.extra_connections.all(), key=lambda c: (c.name, str(c.pk)))
        return [self.connection_id, *[c.pk for c in extra if c.pk != self.connection_id]]

    @property
    def stats(self) -> dict[str, int]:
        return {name: getattr(self, f"stat_{name}") for name in self.STAT_NAMES}

    # Lifecycle (listmonk's). Each change is a conditional UPDATE on the status this
    # instance holds, so two racing callers cannot both win; the loser gets InvalidTransition.
    # Side effects (audience snapshot, senders, live updates) live in campaigns.services.

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT

    def _transition(self, action: str, allowed: set[Any], to_status: str, **fields: Any) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"Cannot {action} a campaign that is {self.get_status_display().lower()}.",
            )
        fields["updated_at"] = timezone.now()
        changed = Campaign.objects.filter(pk=self.pk, status=self.status).update(status=to_status, **fields)
        if not changed:
            self.refresh_from_db(fields=["status"])
            raise InvalidTransition(f"Cannot {action}: the campaign just became {self.status}.")
        self.status = to_status
        for name, value in fields.items():
            setattr(self, name, value)

    def schedule(self) -> None:
        """draft -> scheduled; needs a scheduled_at in the future."""
        if self.scheduled_at is None or self.scheduled_at <= timezone.now():
            raise InvalidTransition("Cannot schedule a campaign without a start time in the future.")
        self._transition("schedule", {self.Status.DRAFT}, self.Status.SCHEDULED)

    def unschedule(self) -> None:
        """scheduled -> draft."""
        self._transition("unschedule", {self.Status.SCHEDULED}, self.Status.DRAFT)

    def start(self) -> None:
        """draft or scheduled -> preparing, with a fresh audience snapshot to take (the caller
        enqueues its worker; `complete_preparation` then makes it run)."""
        allowed = {self.Status.DRAFT, self.Status.SCHEDULED}
        now = timezone.now()
        self._transition(
            "start",
            allowed,
            self.Status.PREPARING,
            started_at=now,
            pause_reason="",
            consecutive_errors=0,
            template_errors=0,
            prepared_at=None,
            audience_count=None,
            prepare_cursor=0,
            prepare_owner=None,
            dispatch_seen_at=now,
        )

    def pause(self, reason: str = "") -> None:
        """preparing or running -> paused. A snapshot being taken goes on to its end."""
        self._transition("pause", {self.Status.PREPARING, self.Status.RUNNING}, self.Status.PAUSED, pause_reason=reason)

    def resume(self) -> None:
        """paused -> running, with the error run forgotten; back to preparing when the audience
        snapshot has not finished yet."""
        with transaction.atomic():
            # Read under the row lock that `complete_preparation` takes too: a snapshot ending
            # meanwhile is seen, so the campaign cannot go back to preparing with nobody on it.
            locked = Campaign.objects.select_for_update().filter(pk=self.pk)
            self.prepare_cursor = locked.values_list("prepare_cursor", flat=True).first()
            to_status = self.Status.RUNNING if self.prepare_cursor is None else self.Status.PREPARING
            self._transition(
                "resume", {self.Status.PAUSED}, to_status, pause_reason="", consecutive_errors=0, template_errors=0
            )

    def cancel(self) -> None:
        """scheduled, preparing, running or paused -> cancelled (the caller cancels unsent
        deliveries; a snapshot being taken stops, its chunk in progress rolled back)."""
        allowed = {self.Status.SCHEDULED, self.Status.PREPARING, self.Status.RUNNING, self.Status.PAUSED}
        self._transition("cancel", allowed, self.Status.CANCELLED, finished_at=timezone.now())

    def finish(self) -> None:
        """running -> finished (the caller checks that nothing is left to send)."""
        self._transition("finish", {self.Status.RUNNING}, self.Status.FINISHED, finished_at=timezone.now())

    def reopen(self) -> None:
        """finished -> running, to send failed deliveries again (the caller moves them back)."""
        self._transition("reopen", {self.Status.FINISHED}, self.Status.RUNNING, finished_at=None)

    # The audience snapshot. One worker run owns it at a time (`prepare_owner`, claimed with
    # a conditional UPDATE); each chunk moves the cursor, the counters and the heartbeat only
    # while that run still owns it and the campaign is preparing or paused, so a cancel or a
    # takeover rolls the old run's chunk back and stops it.

    @property
    def is_preparing(self) -> bool:
        """The audience snapshot is still being taken (preparing, or paused before it ended)."""
        return self.prepare_cursor is not None and self.status in (self.Status.PREPARING, self.Status.PAUSED)

    @property
    def preparation(self) -> dict[str, int | None] | None:
        """While is_preparing, {"prepared": deliveries created so far, "total": sendable
        contacts counted when it began (None until counted)}; None otherwise."""
        if not self.is_preparing:
            return None
        return {"prepared": self.stat_total, "total": self.audience_count}

    @classmethod
    def _preparing(cls, campaign_id: Any) -> models.QuerySet[Campaign]:
        return cls.objects.filter(
            pk=campaign_id, prepare_cursor__isnull=False, status__in=[cls.Status.PREPARING, cls.Status.PAUSED]
        )

    @classmethod
    def claim_preparation(cls, campaign_id: Any, owner: uuid.UUID, *, stale_after: float) -> bool:
        """Make OWNER the run taking the snapshot, when nobody owns it or its owner's heartbeat
        is older than STALE_AFTER seconds (that run died). True when claimed."""
        now = timezone.now()
        free = Q(prepare_owner__isnull=True) | Q(dispatch_seen_at__lt=now - timedelta(seconds=stale_after))
        return bool(cls._preparing(campaign_id).filter(free).update(prepare_owner=owner, dispatch_seen_at=now))

    @classmethod
    def advance_preparation(
        cls, campaign_id: Any, owner: uuid.UUID, *, upto: int, created: int = 0, **fields: Any
    ) -> bool:
        """Record that OWNER's snapshot covers contact ids up to UPTO and created CREATED more
        pending deliveries (counted, in the caller's transaction), with a heartbeat (and
        FIELDS); False, changing nothing, when OWNER no longer owns it or it was cancelled."""
        if created:
            fields.update(stat_total=F("stat_total") + created, stat_pending=F("stat_pending") + created)
        return bool(
            cls._preparing(campaign_id)
            .filter(prepare_owner=owner)
            .update(prepare_cursor=upto, dispatch_seen_at=timezone.now(), **fields)
        )

    @classmethod
    def release_preparation(cls, campaign_id: Any, owner: uuid.UUID) -> None:
        """OWNER stops taking the snapshot before its end; the next run claims it at once."""
        cls._preparing(campaign_id).filter(prepare_owner=owner).update(prepare_owner=None)

    @classmethod
    def complete_preparation(cls, campaign_id: Any, owner: uuid.UUID) -> str | None:
        """End OWNER's snapshot: preparing -> running (finished when it holds no delivery); a
        campaign paused meanwhile stays paused. Returns the status it is left in, or None when
        OWNER no longer owns it (changing nothing)."""
        with transaction.atomic():
            campaign = cls._preparing(campaign_id).filter(prepare_owner=owner).select_for_update().first()
            if campaign is None:
                return None
            now = timezone.now()
            fields: dict[str, Any] = {
                "prepared_at": now,
                "prepare_cursor": None,
                "prepare_owner": None,
                "audience_count": campaign.stat_total,
            }
            if campaign.status == cls.Status.PREPARING:
                if campaign.stat_total:
                    fields.update(status=cls.Status.RUNNING, dispatch_seen_at=now)
                else:
                    fields.update(status=cls.Status.FINISHED, finished_at=now)
                    CampaignActivity.record(campaign, "finished", "Finished: no contact of the audience to send to.")
            cls.objects.filter(pk=campaign_id).update(updated_at=now, **fields)
        return str(fields.get("status", campaign.status))

    @classmethod
    def finish_if_done(cls, campaign_id: Any) -> bool:
        """running -> finished when no delivery is pending or being sent; True when this
        call finished it (the caller broadcasts the change)."""
        left = Delivery.objects.filter(
            campaign_id=campaign_id, status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
        ).exists()
        if left:
            return False
        now = timezone.now()
        with transaction.atomic():
            finished = cls.objects.filter(pk=campaign_id, status=cls.Status.RUNNING).update(
                status=cls.Status.FINISHED, finished_at=now, updated_at=now
            )
            if finished:
                campaign = cls.objects.only("tenant_id", *(f"stat_{n}" for n in cls.STAT_NAMES)).get(pk=campaign_id)
                CampaignActivity.record(
                    campaign,
                    "finished",
                    f"Finished: {campaign.stat_sent} sent, {campaign.stat_failed} failed, "
                    f"{campaign.stat_cancelled} cancelled, {campaign.stat_unknown} unknown.",
                    stats=campaign.stats,
                )
        if finished:
            log.info("[CAMPAIGN] %s finished", campaign_id)
        return bool(finished)

    @classmethod
    def add_to_stats(cls, campaign: Any, deltas: dict[str, int], times: int = 1) -> None:
        """Add DELTAS (counter name -> change), TIMES over, to the counters of CAMPAIGN (an id
        or a subquery giving one) with one F() UPDATE; nothing when no counter changes. Only
        `Delivery`'s moves call this, in the transaction of the status change they count."""
        changes = {f"stat_{name}": F(f"stat_{name}") + d * times for name, d in deltas.items() if d * times}
        if changes:
            cls.objects.filter(pk=campaign).update(**changes)

    @classmethod
    def record_provider_success(cls, campaign_id: Any) -> None:
        """End a run of provider errors (a no-op write-free UPDATE when there is none)."""
        cls.objects.filter(Q(consecutive_errors__gt=0) | Q(template_errors__gt=0), pk=campaign_id).update(
            consecutive_errors=0, template_errors=0
        )

    # Template errors in a row that pause a campaign: every delivery carries the same
    # template, so five refusals in a row mean the template or its mapping is wrong.
    TEMPLATE_ERROR_LIMIT = 5

    @classmethod
    def record_template_error(cls, campaign_id: Any, *, template: bool, reason: str) -> bool:
        """Count one send error in the run of template errors (TEMPLATE: it was one; any
        other error ends the run). Pauses the running campaign with REASON when the run
        reaches TEMPLATE_ERROR_LIMIT; returns True when this call paused it."""
        if not template:
            cls.objects.filter(pk=campaign_id, template_errors__gt=0).update(template_errors=0)
            return False
        with transaction.atomic():
            cls.objects.filter(pk=campaign_id).update(template_errors=F("template_errors") + 1)
            paused = cls.objects.filter(
                pk=campaign_id, status=cls.Status.RUNNING, template_errors__gte=cls.TEMPLATE_ERROR_LIMIT
            ).update(status=cls.Status.PAUSED, pause_reason=reason, updated_at=timezone.now())
        return bool(paused)

    @classmethod
    def record_provider_error(cls, campaign_id: Any, *, limit: int, reason: str) -> bool:
        """Count one provider error; pause the campaign (running -> paused, with REASON) when
        the run reaches LIMIT. Returns True when this call paused it."""
        with transaction.atomic():
            cls.objects.filter(pk=campaign_id).update(consecutive_errors=F("consecutive_errors") + 1)
            paused = cls.objects.filter(
                pk=campaign_id, status=cls.Status.RUNNING, consecutive_errors__gte=limit
            ).update(status=cls.Status.PAUSED, pause_reason=reason, updated_at=timezone.now())
            if paused:
                campaign = cls.objects.only("tenant_id").get(pk=campaign_id)
                CampaignActivity.record(campaign, "paused", reason, reason="errors", errors=limit)
        return bool(paused)


class DeliveryQuerySet(TenantQuerySet):
    def retryable(self, now: datetime) -> DeliveryQuerySet:
        """The deliveries a retry of failed deliveries sends again at NOW: exactly those whose
        `Delivery.retryable_at()` is NOW or earlier (`Delivery.retryable_filter`)."""
        return self.filter(Delivery.retryable_filter(now))


class Delivery(TenantOwned):
    """One message of a campaign to one contact."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        READ = "read", _("Read")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        UNKNOWN = "unknown", _("Unknown")

    # Which campaign counters a delivery in each status contributes to (see Campaign.stats).
    COUNTERS: dict[str, tuple[str, ...]] = {
        Status.PENDING: ("pending",),
        Status.SENDING: ("pending",),
        Status.SENT: ("sent",),
        Status.DELIVERED: ("sent", "delivered"),
        Status.READ: ("sent", "delivered", "read"),
        Status.FAILED: ("failed",),
        Status.CANCELLED: ("cancelled",),
        Status.UNKNOWN: ("unknown",),
    }

    # No index of its own: three indexes below start with campaign_id (every status
    # change rewrites each index of the row, so an index that adds nothing costs every event).
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    phone = models.CharField(max_length=20)
    text = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    provider_message_id = models.CharField(max_length=128, null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    # The connection it went out on (campaigns may rotate across several) and which text
    # variant it carries (0: the campaign's main message).
    connection = models.ForeignKey(Connection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    variant = models.PositiveSmallIntegerField(null=True, blank=True)
    # Cloud API pricing from its status webhooks.
    billable = models.BooleanField(null=True, blank=True)
    pricing_category = models.CharField(max_length=32, blank=True, db_default="")
    # A template campaign's parameters for this contact (parameter key -> text), rendered
    # with the text by the audience snapshot: what is sent is what `text` shows.
    template_values = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeliveryQuerySet.as_manager()  # type: ignore[misc]

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "contact"], name="delivery_unique_campaign_contact"),
        ]
        indexes = [
            models.Index(fields=["campaign", "status"], name="delivery_campaign_status"),
            # The CSV export walks one campaign's deliveries in id order (keyset pages).
            models.Index(fields=["campaign", "id"], name="delivery_campaign_id"),
            models.Index(fields=["provider_message_id"], name="delivery_provider_msg"),
            models.Index(fields=["status", "claimed_at"], name="delivery_status_claimed"),
            # The campaign page's failures by error code and billable messages by category:
            # one GROUP BY each, read from these small partial indexes alone.
            models.Index(fields=["campaign", "error_code"], name="delivery_failed_code", condition=Q(status="failed")),
            models.Index(
                fields=["campaign", "pricing_category"], name="delivery_billable_cat", condition=Q(billable=True)
            ),
        ]
        ordering = ["id"]
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")

    def __str__(self) -> str:
        return f"{self.phone} ({self.status})"

    # --- The status rule -------------------------------------------------------------------
    # A status only moves up: pending < sent < delivered < read. read implies delivered;
    # failed applies only before delivered, and later delivered/read evidence moves a failed
    # delivery on. Timestamps keep the earliest evidence of each stage. So the outcome is the
    # same whatever order a provider's events arrive in.

    @classmethod
    def next_status(cls, current: str, incoming: str) -> str | None:
        """The status a delivery in CURRENT moves to on INCOMING evidence, or None to stay."""
        S = cls.Status
        if current == S.CANCELLED:
            return None  # never sent by us: a stray receipt changes nothing
        if incoming == S.FAILED:
            return S.FAILED if current in (S.PENDING, S.SENDING, S.UNKNOWN, S.SENT) else None
        if incoming not in STAGE_FIELDS:
            return None  # "pending" (Evolution's send.message) is history only
        if current == S.FAILED:
            return incoming if incoming in (S.DELIVERED, S.READ) else None
        return incoming if RANK[incoming] > RANK[current] else None

    def status_change(
        self, status: str, occurred_at: datetime, *, error_code: str = "", error_message: str = ""
    ) -> tuple[str | None, dict[str, Any]]:
        """(new status or None, columns to write) when evidence of STATUS at OCCURRED_AT
        reaches this delivery. Reads this instance only; the caller writes the result."""
        S = self.Status
        new = self.next_status(self.status, status)
        fields: dict[str, Any] = {}
        if self.status == S.CANCELLED:
            return None, fields
        for name in STAGE_FIELDS.get(status, ()):
            current = getattr(self, name)
            if current is None or occurred_at < current:
                fields[name] = occurred_at
        # The earliest failure wins, whatever order the failures arrive in.
        ends_failed = status == S.FAILED and (new or self.status) == S.FAILED
        if ends_failed and (self.failed_at is None or occurred_at < self.failed_at):
            fields.update(failed_at=occurred_at, error_code=error_code[:64], error_message=error_message)
        if self.status == S.FAILED and new in (S.DELIVERED, S.READ):
            # Delivered after all: the failure stays in the event history, not on the row.
            fields.update(failed_at=None, error_code="", error_message="")
        return new, fields

    # --- Retrying failures ----------------------------------------------------------------
    # One rule, two forms that must agree: `retryable_at()` for one row (the delivery modal,
    # the API) and `retryable_filter(now)` for many (the retry of a campaign's failures), both
    # driven by the error code's action in ERROR_ACTIONS (see providers.base.ErrorAction):
    # - never retried: not failed (`unknown` may have been sent), an opted-out or erased
    #   contact, "opt_out" (131050) and "never" codes (131026, Evolution's not_on_whatsapp,
    #   and its legacy NOT_ON_WHATSAPP_TEXT), "never_free_text" (131047) in a free-text campaign;
    # - "wait" (131049, Meta's per-user marketing cap): RETRY_WAIT after the failure;
    # - any other failure: at once.

    RETRY_WAIT = timedelta(hours=24)
    # How Evolution described a number not on WhatsApp before it had the `not_on_whatsapp`
    # code (providers/evolution.py): those rows are never retried either.
    NOT_ON_WHATSAPP_TEXT = "number is not on WhatsApp"

    # Error code -> Sense's action on it, over every provider ("opt_out", "wait", ...): filled
    # from the provider registry when the app is ready (the models never import providers).
    ERROR_ACTIONS: ClassVar[dict[str, frozenset[str]]] = {}

    @classmethod
    def _codes(cls, *actions: str) -> list[str]:
        return sorted(code for action in actions for code in cls.ERROR_ACTIONS.get(action, ()))

    def not_retryable_reason(self) -> str:
        """Why a retry never sends this delivery again, for a person; "" when it may (at
        `retryable_at()`). Reads the contact and the campaign (select_related them)."""
        if self.status == self.Status.UNKNOWN:
            return gettext("Its outcome is unknown: it may have been sent.")
        if self.status != self.Status.FAILED:
            return gettext("It has not failed.")
        if self.contact is None:
            return gettext("The contact was erased.")
        if self.contact.opted_out:
            return gettext("The contact opted out.")
        if self.error_code in self._codes("opt_out"):
            return gettext("The contact stopped marketing messages.")
        if self.error_code in self._codes("never") or self.error_message.startswith(self.NOT_ON_WHATSAPP_TEXT):
            return gettext("The number cannot receive it: sending it again fails the same way.")
        if self.error_code in self._codes("never_free_text") and self.campaign.template_id is None:
            return gettext("Free text outside the 24-hour window: only a template can reach the contact.")
        return ""

    def retryable_at(self) -> datetime | None:
        """When a retry may send this delivery again: its failure time for most failures,
        RETRY_WAIT after it for a "wait" code, None when never (`not_retryable_reason()`)."""
        if self.not_retryable_reason():
            return None
        failed_at = self.failed_at or self.updated_at or timezone.now()
        if self.error_code in self._codes("wait"):
            return failed_at + self.RETRY_WAIT
        return failed_at

    @classmethod
    def retryable_filter(cls, now: datetime) -> Q:
        """`retryable_at() <= NOW` as a filter, the same rule clause by clause, for a retry
        of many deliveries at once (`DeliveryQuerySet.retryable`)."""

        def failed_by(cutoff: datetime) -> Q:  # the failure time retryable_at() starts from
            return Q(failed_at__lte=cutoff) | Q(failed_at__isnull=True, updated_at__lte=cutoff)

        wait = cls._codes("wait")
        return (
            Q(status=cls.Status.FAILED, contact__opted_out=False)  # the inner join drops erased contacts
            & ~Q(error_code__in=cls._codes("opt_out", "never"))
            & ~Q(error_message__startswith=cls.NOT_ON_WHATSAPP_TEXT)
            & ~Q(error_code__in=cls._codes("never_free_text"), campaign__template__isnull=True)
            & ((~Q(error_code__in=wait) & failed_by(now)) | (Q(error_code__in=wait) & failed_by(now - cls.RETRY_WAIT)))
        )

    @classmethod
    def stat_deltas(cls, old: str, new: str) -> dict[str, int]:
        """Counter changes when a delivery moves from OLD to NEW status."""
        deltas: dict[str, int] = {}
        for name in cls.COUNTERS[old]:
            deltas[name] = deltas.get(name, 0) - 1
        for name in cls.COUNTERS[new]:
            deltas[name] = deltas.get(name, 0) + 1
        return {name: d for name, d in deltas.items() if d}

    @classmethod
    def move(cls, delivery_id: int, *, from_status: str, to_status: str, **fields: Any) -> bool:
        """Move one delivery FROM_STATUS -> TO_STATUS with a conditional UPDATE and apply the
        counter deltas to its campaign in the same transaction. Returns False (changing
        nothing) when the delivery was no longer in FROM_STATUS: someone else moved it."""
        with transaction.atomic():
            changed = cls.objects.filter(pk=delivery_id, status=from_status).update(
                status=to_status, updated_at=timezone.now(), **fields
            )
            if not changed:
                return False
            # The campaign id as a subquery: no extra round trip to read it back.
            campaign = Subquery(cls.objects.filter(pk=delivery_id).order_by().values("campaign_id"))
            Campaign.add_to_stats(campaign, cls.stat_deltas(from_status, to_status))
        return True

    @classmethod
    def move_locked(cls, moves: Sequence[tuple[int, Any, str, str, dict[str, Any]]]) -> None:
        """Write MOVES (delivery id, campaign id, from status, to status, fields) of deliveries
        the caller holds locked (SELECT ... FOR UPDATE in its transaction), each once, then
        change each campaign's counters once, campaigns in id order. For batches: one counter
        UPDATE per campaign instead of one per delivery, and no lock-order cycles."""
        totals: dict[Any, dict[str, int]] = {}
        # One UPDATE per set of changed fields (a handful per batch: delivered, read, failed),
        # not one per delivery; each row still only moves from the status it was locked in.
        shapes: dict[tuple[str, ...], list[tuple[int, str, str, dict[str, Any]]]] = {}
        for delivery_id, campaign_id, from_status, to_status, fields in moves:
            shapes.setdefault(tuple(sorted(fields)), []).append((delivery_id, from_status, to_status, fields))
            campaign_totals = totals.setdefault(campaign_id, {})
            for name, d in cls.stat_deltas(from_status, to_status).items():
                campaign_totals[name] = campaign_totals.get(name, 0) + d
        with transaction.atomic():
            now = timezone.now()
            for shape, rows in shapes.items():
                cls._move_rows(rows, shape, now)
            for campaign_id in sorted(totals, key=str):
                Campaign.add_to_stats(campaign_id, totals[campaign_id])

    @classmethod
    def _move_rows(cls, rows: list[tuple[int, str, str, dict[str, Any]]], shape: tuple[str, ...], now: Any) -> None:
        """One UPDATE for ROWS (id, from status, to status, fields), whose fields all have the
        names SHAPE; raises if any row was no longer in its from status."""
        db = connections[cls.objects.db]
        if db.vendor == "postgresql" and len(rows) > 1:
            changed = cls._move_rows_unnest(db, rows, shape, now)
        else:
            changed = cls._move_rows_orm(rows, shape, now)
        if changed != len(rows):
            raise OperationalError(f"deliveries {[row[0] for row in rows]} changed under a lock")

    @classmethod
    def _move_rows_unnest(
        cls, db: Any, rows: list[tuple[int, str, str, dict[str, Any]]], shape: tuple[str, ...], now: Any
    ) -> int:
        """`_move_rows` on PostgreSQL: the rows' values as one array per column, joined with
        `unnest` (the ORM's CASE WHEN per row and column costs more Python than the batch's
        every other statement together). Returns how many rows changed."""
        qn = db.ops.quote_name
        status = cls._meta.get_field("status")
        columns: list[tuple[str, Any, list[Any]]] = [
            ("id", cls._meta.pk, [row[0] for row in rows]),
            ("from_status", status, [row[1] for row in rows]),
            ("to_status", status, [row[2] for row in rows]),
        ]
        for name in shape:
            field = cls._meta.get_field(name)
            assert isinstance(field, models.Field)
            columns.append((str(field.column), field, [row[3][name] for row in rows]))
        arrays = ", ".join(f"%s::{field.db_type(db)}[]" for _, field, _ in columns)
        values = [[field.get_db_prep_value(v, db) for v in column] for _, field, column in columns]
        assignments = ", ".join(f"{qn(column)} = v.{qn(column)}" for column, _, _ in columns[3:])
        table = qn(cls._meta.db_table)
        sql = (
            f"UPDATE {table} AS d SET {qn('updated_at')} = %s, {qn('status')} = v.to_status"
            + (f", {assignments}" if assignments else "")
            + f" FROM unnest({arrays}) AS v({', '.join(qn(c) for c, _, _ in columns)})"
            + f" WHERE d.{qn('id')} = v.{qn('id')} AND d.{qn('status')} = v.from_status"
        )
        with db.cursor() as cursor:
            cursor.execute(sql, [now, *values])
            return int(cursor.rowcount)

    @classmethod
    def _move_rows_orm(cls, rows: list[tuple[int, str, str, dict[str, Any]]], shape: tuple[str, ...], now: Any) -> int:
        """`_move_rows` on any database: CASE WHEN per changed column. Returns how many rows changed."""
        if len(rows) == 1:
            delivery_id, from_status, to_status, fields = rows[0]
            changes: dict[str, Any] = {"status": to_status, **fields}
        else:

            def per_row(name: str, values: list[Any]) -> models.Case:
                field = cls._meta.get_field(name)
                assert isinstance(field, models.Field)
                whens = [
                    models.When(pk=row[0], then=models.Value(value, output_field=field))
                    for row, value in zip(rows, values, strict=True)
                ]
                return models.Case(*whens, output_field=field)

            changes = {"status": per_row("status", [row[2] for row in rows])}
            for name in shape:
                changes[name] = per_row(name, [row[3][name] for row in rows])
        where = reduce(operator.or_, (models.Q(pk=row[0], status=row[1]) for row in rows))
        return cls.objects.filter(where).update(updated_at=now, **changes)

    @classmethod
    def move_each(
        cls, *, campaign_id: Any, from_status: str, to_status: str, changes: dict[int, dict[str, Any]]
    ) -> list[int]:
        """`move` for several deliveries of one campaign, each with its own FIELDS (CHANGES maps
        id -> fields), in one transaction with one counter update. Returns the ids that moved
        (the others were no longer in FROM_STATUS)."""
        moved = []
        with transaction.atomic():
            now = timezone.now()
            for delivery_id, fields in changes.items():
                if cls.objects.filter(pk=delivery_id, status=from_status).update(
                    status=to_status, updated_at=now, **fields
                ):
                    moved.append(delivery_id)
            Campaign.add_to_stats(campaign_id, cls.stat_deltas(from_status, to_status), len(moved))
        return moved

    @classmethod
    def move_many(
        cls, *, campaign_id: Any, from_status: str, to_status: str, ids: list[int] | None = None, **fields: Any
    ) -> int:
        """`move` for many deliveries of one campaign: every one in FROM_STATUS (only IDS when
        given) moves to TO_STATUS, and the counters change by the number moved, in one
        transaction. Returns how many moved."""
        with transaction.atomic():
            qs = cls.objects.filter(campaign_id=campaign_id, status=from_status)
            if ids is not None:
                qs = qs.filter(pk__in=ids)
            changed = qs.update(status=to_status, updated_at=timezone.now(), **fields)
            Campaign.add_to_stats(campaign_id, cls.stat_deltas(from_status, to_status), changed)
        return changed


_S = Delivery.Status
# Delivered evidence outranks sent, read outranks delivered. Not-yet-sent states rank 0.
RANK: dict[str, int] = {_S.PENDING: 0, _S.SENDING: 0, _S.UNKNOWN: 0, _S.SENT: 1, _S.DELIVERED: 2, _S.READ: 3}
# The timestamp columns each kind of evidence proves (read implies delivered implies sent).
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    _S.SENT: ("sent_at",),
    _S.DELIVERED: ("sent_at", "delivered_at"),
    _S.READ: ("sent_at", "delivered_at", "read_at"),
}


class WebhookEvent(TenantOwned):
    """A provider webhook call, stored raw inside the request before it is processed."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSED = "processed", _("Processed")
        IGNORED = "ignored", _("Ignored")
        FAILED = "failed", _("Failed")

    # Indexed by webhook_tenant_received (tenant_id first), not again on its own: every
    # webhook inserts a row and its claim rewrites it.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, verbose_name=_("tenant"), db_index=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="webhook_events")
    provider = models.CharField(max_length=16, choices=Connection.Provider.choices)
    event_type = models.CharField(max_length=64)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "received_at"], name="webhook_status_received"),
            models.Index(fields=["tenant", "-received_at"], name="webhook_tenant_received"),
        ]
        ordering = ["-received_at"]
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.received_at:%Y-%m-%d %H:%M:%S}"


class DeliveryEvent(TenantOwned):
    """One status event received for a delivery (the delivery-log modal's rows)."""

    # Indexed by deliveryevent_delivery_time (delivery_id first), not again on its own.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events", db_index=False)
    webhook_event = models.ForeignKey(
        WebhookEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="delivery_events"
    )
    status = models.CharField(max_length=16, choices=Delivery.Status.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=64, help_text=_("the provider's event type"))
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["delivery", "occurred_at"], name="deliveryevent_delivery_time")]
        verbose_name = _("delivery event")
        verbose_name_plural = _("delivery events")

    def __str__(self) -> str:
        return f"{self.status} at {self.occurred_at}"


class PendingStatus(TenantOwned):
    """A status event whose message id matched no delivery yet: providers can call the
    webhook before the send call has returned the id. Applied (and deleted) once a
    delivery records that id, by `campaigns.tracking.apply_early_events` or the sweeper."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    webhook_event = models.ForeignKey(WebhookEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider_message_id = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Delivery.Status.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=64)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    billable = models.BooleanField(null=True, blank=True)
    pricing_category = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "provider_message_id"], name="pendingstatus_tenant_msg"),
            models.Index(fields=["received_at"], name="pendingstatus_received"),
        ]
        verbose_name = _("early status event")
        verbose_name_plural = _("early status events")

    def __str__(self) -> str:
        return f"{self.provider_message_id} {self.status}"


class WebhookRejection(TenantOwned):
    """How many webhook calls a connection refused per day and reason (bad signature,
    JWT or instance): nothing of such a call is stored, so this is what the ops page shows."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    reason = models.CharField(max_length=32)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "day", "reason"], name="webhookrejection_unique_day")
        ]
        ordering = ["-day"]
        verbose_name = _("rejected webhook calls")
        verbose_name_plural = _("rejected webhook calls")

    def __str__(self) -> str:
        return f"{self.day} {self.reason}: {self.count}"

    @classmethod
    def bump(cls, connection: Connection, reason: str) -> None:
        """Count one refused call of CONNECTION for REASON today. Never raises: a counter
        must not turn a refusal into a 500."""
        day = timezone.localdate()
        row = cls.objects.filter(connection=connection, day=day, reason=reason)
        try:
            with transaction.atomic():
                if not row.update(count=F("count") + 1):
                    cls.objects.bulk_create(
                        [cls(tenant_id=connection.tenant_id, connection=connection, day=day, reason=reason)],
                        ignore_conflicts=True,
                    )
                    row.update(count=F("count") + 1)
        except Exception as exc:
            log.warning("[WEBHOOK] rejection not counted: %s", exc.__class__.__name__)

    @classmethod
    def total_since(cls, since: date | None = None, *, tenant_id: Any = None) -> int:
        """Refused calls since SINCE (default today), for one tenant or all."""
        qs = cls.objects.filter(day__gte=since or timezone.localdate())
        if tenant_id is not None:
            qs = qs.filter(tenant_id=tenant_id)
        return sum(qs.values_list("count", flat=True))


class ContactErasure(TenantOwned):
    """The record, kept for the tenant's audit, that a contact was erased (LGPD): when, by
    whom, through which entry point and what was done. Nothing about the contact itself."""

    class Via(models.TextChoices):
        API = "api", _("API")
        PAGE = "page", _("Contacts page")
        ADMIN = "admin", _("Django admin")

    erased_at = models.DateTimeField(_("erased at"), default=timezone.now)
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who, still readable after that user is deleted.
    erased_by_name = models.CharField(_("erased by"), max_length=150, blank=True)
    via = models.CharField(_("via"), max_length=16, choices=Via.choices)
    deliveries_anonymized = models.PositiveIntegerField(_("deliveries anonymized"), default=0)
    deliveries_cancelled = models.PositiveIntegerField(_("unsent deliveries cancelled"), default=0)
    webhook_events_deleted = models.PositiveIntegerField(_("stored webhooks deleted"), default=0)

    class Meta:
        ordering = ["-erased_at"]
        indexes = [models.Index(fields=["tenant", "-erased_at"], name="erasure_tenant_time")]
        verbose_name = _("contact erasure")
        verbose_name_plural = _("contact erasures")

    def __str__(self) -> str:
        return f"{self.erased_at:%Y-%m-%d %H:%M} by {self.erased_by_name or '-'}"


TEMPLATE_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class MessageTemplate(TenantOwned):
    """A WhatsApp Cloud API message template of a connection's WhatsApp Business Account, as
    Meta last described it (synced, or changed by a status webhook)."""

    class Status(models.TextChoices):  # as Meta sends them; other values are kept as sent
        APPROVED = "APPROVED", _("Approved")
        PENDING = "PENDING", _("Pending")
        REJECTED = "REJECTED", _("Rejected")
        # A context: "Paused" of a campaign is feminine in Portuguese, of a template masculine.
        PAUSED = "PAUSED", pgettext_lazy("message template", "Paused")
        DISABLED = "DISABLED", _("Disabled")
        IN_APPEAL = "IN_APPEAL", _("In appeal")
        ARCHIVED = "ARCHIVED", _("Archived")
        DELETED = "DELETED", _("Deleted")
        PENDING_DELETION = "PENDING_DELETION", _("Pending deletion")
        LIMIT_EXCEEDED = "LIMIT_EXCEEDED", _("Limit exceeded")

    class ParameterFormat(models.TextChoices):
        POSITIONAL = "POSITIONAL", _("Positional")
        NAMED = "NAMED", _("Named")

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="templates")
    meta_id = models.CharField(_("Meta template id"), max_length=64, blank=True)
    name = models.CharField(_("name"), max_length=512)
    language = models.CharField(_("language"), max_length=16)
    status = models.CharField(_("status"), max_length=32, default=Status.PENDING)
    category = models.CharField(_("category"), max_length=32, blank=True)
    parameter_format = models.CharField(
        _("parameter format"), max_length=16, choices=ParameterFormat.choices, default=ParameterFormat.POSITIONAL
    )
    components = models.JSONField(_("components"), default=list, blank=True)
    quality_score = models.CharField(_("quality"), max_length=16, blank=True)
    status_reason = models.TextField(_("status reason"), blank=True)
    synced_at = models.DateTimeField(_("synced at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "name", "language"], name="template_unique_conn_name_lang")
        ]
        indexes = [models.Index(fields=["tenant", "status"], name="template_tenant_status")]
        ordering = ["name", "language"]
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"

    def status_label(self) -> str:
        """The status as the page's status filter names it (`Status`, translated); a value Meta
        sent that `Status` does not know, as sent (the field has no choices, so Django makes no
        get_status_display for it)."""
        try:
            return str(self.Status(self.status).label)
        except ValueError:
            return self.status

    # --- Reading Meta's components ----------------------------------------------------------
    # components: [{"type": "HEADER", "format": "TEXT"|"IMAGE"|..., "text"}, {"type": "BODY",
    # "text"}, {"type": "FOOTER", "text"}, {"type": "BUTTONS", "buttons": [{"type": "URL",
    # "text", "url"}, ...]}] with {{1}} (POSITIONAL) or {{first_name}} (NAMED) placeholders
    # (developers.facebook.com/docs/whatsapp/business-management-api/message-templates/components).

    # Statuses that stop a campaign using the template (paused on the way, refused at start).
    BLOCKING = frozenset({"PAUSED", "DISABLED", "REJECTED", "DELETED", "ARCHIVED", "PENDING_DELETION"})
    MEDIA_HEADERS = {"IMAGE": "image", "VIDEO": "video", "DOCUMENT": "document"}  # -> Asset.file_type

    def _component(self, kind: str) -> dict[str, Any]:
        for component in self.components or []:
            if isinstance(component, dict) and str(component.get("type") or "").upper() == kind:
                return component
        return {}

    @property
    def header_format(self) -> str | None:
        """TEXT, IMAGE, VIDEO, DOCUMENT (or LOCATION...), None without a header."""
        header = self._component("HEADER")
        return str(header.get("format") or "TEXT").upper() if header else None

    @property
    def header_media_kind(self) -> str | None:
        """The media file type the header takes (image, video, document), or None."""
        return self.MEDIA_HEADERS.get(self.header_format or "")

    @property
    def header_text(self) -> str:
        header = self._component("HEADER")
        return str(header.get("text") or "") if self.header_format == "TEXT" else ""

    @property
    def body_text(self) -> str:
        return str(self._component("BODY").get("text") or "")

    @property
    def footer_text(self) -> str:
        return str(self._component("FOOTER").get("text") or "")

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The buttons: [{"index", "type" (URL, QUICK_REPLY, PHONE_NUMBER, ...), "text", and
        "url" or "phone_number" when they have one}]."""
        found = self._component("BUTTONS").get("buttons")
        out = []
        for index, button in enumerate(found if isinstance(found, list) else []):
            if not isinstance(button, dict):
                continue
            item = {
                "index": index,
                "type": str(button.get("type") or "").upper(),
                "text": str(button.get("text") or ""),
            }
            for key in ("url", "phone_number"):
                if button.get(key):
                    item[key] = str(button[key])
            out.append(item)
        return out

    @staticmethod
    def placeholders(text: str) -> list[str]:
        """The placeholder names of TEXT ("1", "first_name"), in order, each once."""
        return list(dict.fromkeys(TEMPLATE_PLACEHOLDER.findall(text)))

    def url_buttons(self) -> list[tuple[int, str]]:
        """(index, parameter key) of each URL button whose URL has a variable part."""
        out = []
        for button in self.buttons:
            if button["type"] == "URL" and self.placeholders(button.get("url", "")):
                out.append((button["index"], f"button.{button['index']}"))
        return out

    @property
    def parameters(self) -> list[str]:
        """Every parameter a send must fill: the body's ("1", "2"... or names), the text
        header's as "header.<name or n>", variable URL buttons' as "button.<index>"."""
        header = [f"header.{name}" for name in self.placeholders(self.header_text)]
        return [*header, *self.placeholders(self.body_text), *(key for _, key in self.url_buttons())]

    @staticmethod
    def fill(text: str, values: dict[str, str], prefix: str = "") -> str:
        """TEXT with each {{x}} replaced by VALUES[PREFIX + x] (left as is when missing)."""

        def value(match: re.Match[str]) -> str:
            return values.get(prefix + match.group(1), match.group(0))

        return TEMPLATE_PLACEHOLDER.sub(value, text)

    def render(self, values: dict[str, str]) -> str:
        """The body with VALUES (parameter key -> text) filled in: what the contact reads."""
        return self.fill(self.body_text, values)

    def render_header(self, values: dict[str, str]) -> str:
        return self.fill(self.header_text, values, "header.")

    @property
    def is_approved(self) -> bool:
        return self.status == self.Status.APPROVED

    def blocked_reason(self) -> str:
        """Why campaigns may not send this template, for a person."""
        reason = f'The template "{self.name}" ({self.language}) is {self.status.lower().replace("_", " ")}'
        return f"{reason}: {self.status_reason}" if self.status_reason else f"{reason}."

    def apply_change(self, *, status: str = "", reason: str = "", quality: str = "") -> bool:
        """Record Meta's news (a new STATUS with its REASON, or a QUALITY score); True when
        the status changed. Saved at once."""
        fields: dict[str, Any] = {}
        changed = bool(status) and status != self.status
        if status:
            fields.update(status=status, status_reason=reason if status != self.Status.APPROVED else "")
        if quality:
            fields["quality_score"] = quality
        if fields:
            fields["updated_at"] = timezone.now()
            MessageTemplate.objects.filter(pk=self.pk).update(**fields)
            for name, value in fields.items():
                setattr(self, name, value)
        return changed

    def pause_campaigns(self) -> list[Any]:
        """Pause the preparing or running campaigns that send this template, when its status
        blocks sending, each with the reason in its pause and its activity. Returns their ids
        (the caller broadcasts)."""
        if self.status not in self.BLOCKING:
            return []
        reason = self.blocked_reason()
        paused = []
        live = [Campaign.Status.PREPARING, Campaign.Status.RUNNING]
        for campaign in Campaign.objects.filter(template=self, status__in=live):
            try:
                campaign.pause(reason[:1000])
            except InvalidTransition:
                continue  # paused or cancelled meanwhile
            CampaignActivity.record(
                campaign, CampaignActivity.Kind.TEMPLATE, reason, template=self.name, status=self.status
            )
            paused.append(campaign.pk)
        return paused


class InboundMessage(TenantOwned):
    """A message a contact sent to one of the tenant's connections."""

    class Type(models.TextChoices):
        TEXT = "text", _("Text")
        IMAGE = "image", _("Image")
        AUDIO = "audio", _("Audio")
        VIDEO = "video", _("Video")
        DOCUMENT = "document", _("Document")
        STICKER = "sticker", _("Sticker")
        LOCATION = "location", _("Location")
        CONTACTS = "contacts", _("Contacts")
        BUTTON = "button", _("Button reply")
        INTERACTIVE = "interactive", _("Interactive reply")
        REACTION = "reaction", _("Reaction")
        OTHER = "other", _("Other")

    class MediaStatus(models.TextChoices):
        NONE = "", _("No media")
        PENDING = "pending", _("Being fetched")
        FETCHING = "fetching", _("Being fetched")
        STORED = "stored", _("Stored")
        UNAVAILABLE = "unavailable", _("Media unavailable")

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="inbound_messages")
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbound_messages"
    )
    # The campaign delivery it replies to (quoted, or the latest one sent within
    # REPLY_ATTRIBUTION_HOURS), when there is one.
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbound_messages"
    )
    webhook_event = models.ForeignKey(
        WebhookEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbound_messages"
    )
    provider_message_id = models.CharField(max_length=128)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.TEXT)
    text = models.TextField(blank=True)
    phone = models.CharField(max_length=20, blank=True)
    # Cloud API username users may come without a phone (`wa_id`), with a `user_id` instead.
    wa_user_id = models.CharField(max_length=128, blank=True)
    profile_name = models.CharField(max_length=200, blank=True)
    quoted_provider_message_id = models.CharField(max_length=128, blank=True)
    media = models.ForeignKey("media.Asset", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    media_status = models.CharField(max_length=16, choices=MediaStatus.choices, default=MediaStatus.NONE, blank=True)
    # What the provider said about the media (mimetype, file name, its id or URL): never a body.
    media_info = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "provider_message_id"], name="inbound_unique_conn_msg")
        ]
        indexes = [
            models.Index(fields=["tenant", "-received_at"], name="inbound_tenant_time"),
            models.Index(fields=["contact", "-received_at"], name="inbound_contact_time"),
            models.Index(fields=["campaign", "-received_at"], name="inbound_campaign_time"),
        ]
        ordering = ["-received_at"]
        verbose_name = _("inbound message")
        verbose_name_plural = _("inbound messages")

    def __str__(self) -> str:
        return f"{self.phone or self.wa_user_id}: {self.text[:40]}"


class ConsentEvent(TenantOwned):
    """One change of a contact's consent (LGPD: withdrawable at any time, and recorded)."""

    class Source(models.TextChoices):
        KEYWORD = "keyword", _("Keyword")
        PROVIDER = "provider", _("Provider")
        OPERATOR = "operator", _("Operator")
        API = "api", _("API")
        IMPORT = "import", _("Import")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_events")
    opted_out = models.BooleanField(_("opted out"))
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    inbound = models.ForeignKey(InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(_("reason"), blank=True)
    at = models.DateTimeField(_("when"), default=timezone.now)

    class Confirmation(models.TextChoices):
        NONE = "", _("None")
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    # The confirmation text sent back through the connection that received the keyword
    # (ConsentSettings.opt_out_reply / opt_in_reply): claimed queued -> sending, so it goes
    # out once whatever the retries.
    confirmation = models.CharField(
        _("confirmation"), max_length=16, choices=Confirmation.choices, blank=True, default="", db_default=""
    )

    class Meta:
        indexes = [models.Index(fields=["contact", "-at"], name="consent_contact_time")]
        ordering = ["-at", "-id"]
        verbose_name = _("consent event")
        verbose_name_plural = _("consent events")

    def __str__(self) -> str:
        return f"{'opted out' if self.opted_out else 'opted in'} ({self.source})"


DEFAULT_OPT_OUT_KEYWORDS = ["SAIR", "PARAR", "CANCELAR", "DESCADASTRAR", "REMOVER", "STOP", "UNSUBSCRIBE"]
DEFAULT_OPT_IN_KEYWORDS = ["VOLTAR", "ASSINAR", "START"]


def default_opt_out_keywords() -> list[str]:
    return list(DEFAULT_OPT_OUT_KEYWORDS)


def default_opt_in_keywords() -> list[str]:
    return list(DEFAULT_OPT_IN_KEYWORDS)


class ConsentSettings(TenantOwned):
    """A tenant's opt-out and re-subscribe keywords and the optional confirmation texts."""

    opt_out_keywords = models.JSONField(_("opt-out keywords"), default=default_opt_out_keywords, blank=True)
    opt_in_keywords = models.JSONField(_("re-subscribe keywords"), default=default_opt_in_keywords, blank=True)
    opt_out_reply = models.TextField(_("opt-out confirmation"), blank=True)
    opt_in_reply = models.TextField(_("re-subscribe confirmation"), blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="consent_settings_one_per_tenant")]
        verbose_name = _("consent settings")
        verbose_name_plural = _("consent settings")

    def __str__(self) -> str:
        return f"consent settings of {self.tenant_id}"

    @classmethod
    def for_tenant(cls, tenant: Any) -> ConsentSettings:
        """The tenant's settings, the defaults when it never saved any (not written)."""
        return cls.objects.filter(tenant=tenant).first() or cls(tenant=tenant)

    def match(self, text: str) -> bool | None:
        """True when TEXT, as a whole, is one of the opt-out keywords; False when it is a
        re-subscribe keyword; None otherwise. Compared trimmed, without accents, case or
        surrounding punctuation: "Sair" and " sair! " match SAIR, "quero sair daqui" does not."""
        word = normalize_keyword(text)
        if not word:
            return None
        if word in {normalize_keyword(k) for k in self.opt_out_keywords}:
            return True
        if word in {normalize_keyword(k) for k in self.opt_in_keywords}:
            return False
        return None


def normalize_keyword(text: str) -> str:
    """TEXT trimmed, casefolded, without accents and without punctuation around it."""
    decomposed = unicodedata.normalize("NFKD", str(text or ""))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.strip().strip(string.punctuation + "¡¿ ").strip().casefold()


class CampaignActivity(TenantOwned):
    """One line of a campaign's activity log: what happened, why, and who did it."""

    class Kind(models.TextChoices):
        CREATED = "created", _("Created")
        EDITED = "edited", _("Edited")
        SCHEDULED = "scheduled", _("Scheduled")
        STARTED = "started", _("Started")
        PAUSED = "paused", _("Paused")
        RESUMED = "resumed", _("Resumed")
        WAITING = "waiting", _("Waiting")
        CONTINUED = "continued", _("Continued")
        CANCELLED = "cancelled", _("Cancelled")
        FINISHED = "finished", _("Finished")
        TEST_SEND = "test_send", _("Test send")
        RETRY = "retry", _("Retry")
        DUPLICATED = "duplicated", _("Duplicated")
        CONNECTION = "connection", _("Connection state")
        LIMIT = "limit", _("Limit reached")
        TEMPLATE = "template", _("Template")
        ERROR = "error", _("Error")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="activity")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["campaign", "-at"], name="activity_campaign_time")]
        ordering = ["-at", "-id"]
        verbose_name = _("campaign activity")
        verbose_name_plural = _("campaign activity")

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"

    @classmethod
    def record(
        cls, campaign: Campaign, kind: str, message: str = "", *, user: Any = None, **data: Any
    ) -> CampaignActivity:
        """Append one line to CAMPAIGN's log (in the caller's transaction)."""
        if user is not None and not getattr(user, "is_authenticated", False):
            user = None
        return cls.objects.create(
            tenant_id=campaign.tenant_id, campaign=campaign, kind=kind, message=message, user=user, data=data
        )
