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
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from campaigns import consent, pacing, ratelimit
from campaigns.live import broadcast_stats, broadcast_stats_on_commit
from campaigns.models import Campaign, CampaignActivity, Connection, Delivery, MessageTemplate, PendingStatus
from campaigns.providers import (
    Media,
    OutgoingMessage,
    Provider,
    ProviderError,
    TemplateButton,
    TemplateMessage,
    TemplateParameter,
    error_info,
    provider_class,
    provider_for,
)
from campaigns.tracking import apply_early_events

log = logging.getLogger("sense.campaigns")

SLICE_SECONDS = 20.0
HEARTBEAT_SECONDS = 5.0
# A connection reported down (or disabled, or given a new daily limit) is seen this soon.
STATE_REFRESH_SECONDS = 1.0
# Longer waits for rate budget are not slept: the run re-enqueues itself with a delay.
MAX_SLEEP = 2.0
# A paced send's slot is at least this far ahead when reserved: time to claim its delivery
# before the slot, so that it leaves at the slot and not a claim's duration later.
PACE_LEAD = 0.25
MEDIA_URL_REFRESH = 60.0


@dataclass
class Claimed:
    id: int
    phone: str
    text: str
    attempts: int
    errors_before: int = 0  # the campaign's run of provider errors when claimed
    template_values: dict[str, str] | None = None  # a template campaign's parameters
    day: date | None = None  # the day whose counter counted it (given back when not sent)


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    unknown: int = 0
    reschedule_in: float | None = None  # seconds; None: do not re-enqueue
    stopped: str = ""


def claim(campaign_id: Any, n: int, *, connection: Connection | None = None) -> list[Claimed] | None:
    """Claim up to N pending deliveries of CAMPAIGN_ID (only while it is running), to go out
    on CONNECTION: each records it, and its counter row of today (locked first, in this
    transaction) counts them, so its daily limit holds whatever the number of workers.
    None when CONNECTION has reached its daily limit."""
    with transaction.atomic():
        day = pacing.today()
        if connection is not None and connection.daily_limit is not None:
            # Locked first: concurrent claims on this connection queue here, each seeing
            # the count the previous one committed.
            n = min(n, connection.daily_limit - pacing.lock_day(connection, day))
            if n <= 0:
                return None
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(campaign_id=campaign_id, status=Delivery.Status.PENDING, campaign__status=Campaign.Status.RUNNING)
            .order_by("pk")
            .values_list("pk", "phone", "text", "attempts", "campaign__consecutive_errors", "template_values")[:n]
        )
        if not rows:
            return []
        ids = [row[0] for row in rows]
        extra: dict[str, Any] = {"connection_id": connection.pk} if connection is not None else {}
        moved = Delivery.move_many(
            campaign_id=campaign_id,
            from_status=Delivery.Status.PENDING,
            to_status=Delivery.Status.SENDING,
            ids=ids,
            claimed_at=timezone.now(),
            attempts=F("attempts") + 1,
            **extra,
        )
        # The rows are locked by this transaction and filtered on status: all of them moved.
        assert moved == len(ids), (moved, ids)
        if connection is not None:
            # Without a limit nothing waits for the row: counted last, one statement.
            pacing.count_sends(connection.pk, day, len(ids), tenant_id=connection.tenant_id)
    return [
        Claimed(
            id=pk,
            phone=phone,
            text=text,
            attempts=attempts + 1,
            errors_before=errors,
            template_values=values,
            day=day,
        )
        for pk, phone, text, attempts, errors, values in rows
    ]


def _unsent_status(campaign_id: Any) -> str:
    """Where a claimed delivery that was not sent goes back to: pending, or cancelled if the
    campaign was cancelled meanwhile."""
    cancelled = Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.CANCELLED).exists()
    return Delivery.Status.CANCELLED if cancelled else Delivery.Status.PENDING


def release(campaign_id: Any, items: list[Claimed], connection_id: Any = None) -> None:
    """Give claimed-but-unsent ITEMS back: pending again, or cancelled if the campaign was;
    CONNECTION_ID's daily counter gets them back."""
    if not items:
        return
    moved = Delivery.move_many(
        campaign_id=campaign_id,
        from_status=Delivery.Status.SENDING,
        to_status=_unsent_status(campaign_id),
        ids=[i.id for i in items],
        claimed_at=None,
        attempts=F("attempts") - 1,
    )
    _give_back(connection_id, items[0].day, moved)


def _give_back(connection_id: Any, day: date | None, n: int) -> None:
    # Its own statement, after the deliveries' transaction: claims lock the day row before
    # the campaign row, so taking them the other way round here could deadlock.
    if connection_id is not None and day is not None and n:
        pacing.count_sends(connection_id, day, -n)


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
        if db_connection.vendor == "postgresql":
            # Losing this commit in a database crash leaves the deliveries in `sending` (later
            # `unknown`), never pending: no duplicate. So it need not wait for the WAL flush,
            # which keeps the campaign row's counter lock short. The claim stays synchronous.
            with db_connection.cursor() as cursor:
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


def record_failure(
    campaign: Campaign, item: Claimed, error: ProviderError, outcome: Outcome, connection_id: Any = None
) -> None:
    """Move ITEM (sent on CONNECTION_ID) after ERROR and count the error against the
    campaign's run of errors. What the provider's code says (providers.error_info) decides
    the rest: a rate limit is sent again later without counting as an error, a user who
    stopped marketing messages is opted out, and a run of template errors pauses the campaign."""
    connection_id = connection_id or campaign.connection_id
    info = error_info(campaign.connection.provider, error.code)
    action = info.action if info is not None else "fail"
    fields = {"error_code": error.code[:64], "error_message": error.message[:2000]}
    if error.kind == "transient" and item.attempts < settings.CAMPAIGN_MAX_ATTEMPTS:
        backoff = error.retry_after if error.retry_after is not None else min(60.0, 2.0 ** min(item.attempts, 6))
        ratelimit.limiter().hold(str(connection_id), backoff)
        release_to = _unsent_status(campaign.pk)
        if Delivery.move(item.id, from_status=Delivery.Status.SENDING, to_status=release_to, claimed_at=None, **fields):
            _give_back(connection_id, item.day, 1)  # the provider did not take it
        outcome.retried += 1
        outcome.reschedule_in = backoff
        if action == "throttle":
            return  # our pace, not a fault of the campaign: it must not pause it
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
        if action == "opt_out":
            consent.contacts_opt_out_by_provider(delivery_ids=[item.id], reason=error.message)
    if _record_template_error(campaign, error, template=action == "template"):
        outcome.stopped = "auto-paused"
        broadcast_stats_on_commit(campaign.pk)
        return
    limit = settings.CAMPAIGN_MAX_CONSECUTIVE_ERRORS
    reason = f"Paused after {limit} provider errors in a row; the last one: {error}"
    if Campaign.record_provider_error(campaign.pk, limit=limit, reason=reason[:1000]):
        log.warning("[CAMPAIGN] %s paused after %d consecutive provider errors", campaign.pk, limit)
        outcome.stopped = "auto-paused"
        broadcast_stats_on_commit(campaign.pk)


def _record_template_error(campaign: Campaign, error: ProviderError, *, template: bool) -> bool:
    """Count ERROR in the campaign's run of template errors; True when that paused it (with
    the template's name in the reason and an activity line)."""
    if not template:
        Campaign.record_template_error(campaign.pk, template=False, reason="")
        return False
    limit = Campaign.TEMPLATE_ERROR_LIMIT
    name = campaign.template.name if campaign.template_id and campaign.template else "?"
    reason = f'Paused after {limit} template errors in a row with template "{name}"; the last one: {error}'
    if not Campaign.record_template_error(campaign.pk, template=True, reason=reason[:1000]):
        return False
    log.warning("[CAMPAIGN] %s paused after %d template errors in a row (%s)", campaign.pk, limit, error.code)
    CampaignActivity.record(campaign, CampaignActivity.Kind.PAUSED, reason[:1000], code=error.code, template=name)
    return True


def template_message(
    template: MessageTemplate, values: dict[str, str], header_media: Media | None = None
) -> TemplateMessage:
    """TEMPLATE to send with VALUES (parameter key -> text; see MessageTemplate.parameters)
    and HEADER_MEDIA for a media header: a NAMED template's parameters carry their names."""
    named = template.parameter_format == MessageTemplate.ParameterFormat.NAMED

    def params(names: list[str], prefix: str = "") -> tuple[TemplateParameter, ...]:
        return tuple(TemplateParameter(values.get(prefix + n, ""), n if named else "") for n in names)

    return TemplateMessage(
        name=template.name,
        language=template.language,
        header_media=header_media if template.header_media_kind else None,
        header_parameters=params(template.placeholders(template.header_text), "header."),
        body_parameters=params(template.placeholders(template.body_text)),
        buttons=tuple(
            TemplateButton(index, "url", (TemplateParameter(values.get(key, "")),))
            for index, key in template.url_buttons()
        ),
    )


class MediaUrl:
    """The campaign's media as the provider fetches it: a presigned URL, refreshed well
    before it expires."""

    def __init__(self, campaign: Campaign, *, header: bool = False) -> None:
        # HEADER: the template's header media instead of the campaign's attachment.
        self.asset = campaign.header_media if header else campaign.media
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


# Waits longer than this are split: the sender wakes, checks again and re-enqueues itself.
MAX_DELAY = 3600.0
# How often a campaign waiting for a connection is looked at again when no webhook says
# one is back (the stalled-campaign kick does it; its senders stop meanwhile).
CONNECTION_RECHECK = 60.0


@dataclass
class Pick:
    connection: Connection
    n: int  # deliveries to claim
    slot_at: float | None = None  # paced: time.monotonic() at which the send may go out


class _Run:
    """One `dispatch` run of one running campaign: its connections and their providers,
    media, rate budget and pace, and the timers of its heartbeat, live updates and checks."""

    def __init__(self, campaign: Campaign, connections: list[Connection], slice_seconds: float) -> None:
        self.campaign = campaign
        self.connections = connections
        self.providers: dict[Any, Provider] = {}
        self.media = MediaUrl(campaign)
        self.header_media = MediaUrl(campaign, header=True)
        self.limiter = ratelimit.limiter()
        self.outcome = Outcome()
        self.slice_seconds = slice_seconds
        self.started = self.last_beat = self.last_states = time.monotonic()
        # A success ends the campaign's run of errors; only write that when a run may exist.
        self.errors_seen = campaign.consecutive_errors > 0
        self.capped: set[Any] = set()  # connections at their daily limit (this run)
        self.sent_at_beat = 0

    def provider(self, connection: Connection) -> Provider:
        if connection.pk not in self.providers:
            self.providers[connection.pk] = provider_for(connection)
        return self.providers[connection.pk]

    def loop(self) -> None:
        """Pick a connection, claim, send, record, until the slice ends or something stops it."""
        self.beat()
        while not self.slice_over():
            self.keep_alive()
            if not self.window_open():
                break
            pick = self.pick()
            if pick is None:
                break
            if not pick.n:
                continue
            items = claim(self.campaign.pk, pick.n, connection=pick.connection)
            if items is None:  # at its daily limit since we last looked
                self.capped.add(pick.connection.pk)
                pacing.report_limit(self.campaign, pick.connection, pacing.today())
                continue
            if not items:
                if Campaign.finish_if_done(self.campaign.pk):
                    broadcast_stats_on_commit(self.campaign.pk)
                break
            if items[0].errors_before:
                self.errors_seen = True
            if self.campaign.waiting_reason:
                pacing.campaign_continue(self.campaign)
            self.send_batch(items, pick)
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
        """The heartbeat every HEARTBEAT_SECONDS and the connections' states every
        STATE_REFRESH_SECONDS."""
        now = time.monotonic()
        if now - self.last_beat > HEARTBEAT_SECONDS:
            self.beat()
        if now - self.last_states > STATE_REFRESH_SECONDS:
            self.refresh_connections()

    def refresh_connections(self) -> None:
        """The connections' states and limits as they are now (a webhook may have changed them)."""
        fresh = {c.pk: c for c in Connection.objects.filter(pk__in=[c.pk for c in self.connections])}
        self.connections = [fresh[c.pk] for c in self.connections if c.pk in fresh and fresh[c.pk].is_active]
        self.capped.clear()
        self.last_states = time.monotonic()

    def wait(self, reason: str, until: datetime | None, reschedule_in: float | None) -> None:
        pacing.campaign_wait(self.campaign, reason, until)
        self.outcome.reschedule_in = None if reschedule_in is None else min(max(reschedule_in, 0.5), MAX_DELAY)

    def window_open(self, now: datetime | None = None) -> bool:
        """False (the campaign waits for its window, the run ends) outside the send window."""
        is_open, opens = pacing.window_status(self.campaign, now)
        if is_open:
            return True
        delay = (opens - timezone.now()).total_seconds() if opens else MAX_DELAY
        self.wait(Campaign.Waiting.WINDOW, opens, delay)
        return False

    def pick(self) -> Pick | None:
        """The connection to send on next and how many to claim (n 0: slept, ask again);
        None when the run should end (waiting, or a wait long enough to hand over to a
        delayed message: `outcome.reschedule_in`)."""
        campaign = self.campaign
        usable = [c for c in self.connections if c.can_send]
        if not usable:
            self.wait(Campaign.Waiting.CONNECTION, None, None)
            return None
        candidates = [c for c in usable if c.pk not in self.capped]
        if not candidates:
            until = pacing.next_day_start()
            self.wait(Campaign.Waiting.DAILY_LIMIT, until, (until - timezone.now()).total_seconds() + 1)
            return None
        waits: list[float] = []
        paced = campaign.is_paced
        for connection in pacing.rotation_order(campaign, candidates):
            slot_at = None
            if paced:
                slot = self.limiter.pace(
                    str(connection.pk),
                    gap=pacing.random_gap(campaign),
                    max_wait=MAX_SLEEP,
                    lead=PACE_LEAD,
                    every=campaign.pause_every if campaign.pause_seconds else 0,
                    pause=campaign.pause_seconds + pacing.PACE_SLACK,
                )
                if not slot.reserved:
                    waits.append(slot.wait)
                    continue
                slot_at = time.monotonic() + slot.wait
            grant = self.limiter.acquire(
                str(connection.pk),
                limit=connection.rate_per_minute,
                window=ratelimit.window_seconds(),
                n=1 if paced else settings.CAMPAIGN_CLAIM_BATCH,
            )
            if grant.granted:
                return Pick(connection, grant.granted, slot_at)
            waits.append(grant.wait)
        wait = min(waits)
        if wait > MAX_SLEEP:
            self.outcome.reschedule_in = min(wait, MAX_DELAY)
            return None
        time.sleep(wait)
        return Pick(candidates[0], 0)

    def send_batch(self, items: list[Claimed], pick: Pick) -> None:
        """Send claimed ITEMS in order on the picked connection, then record the sends
        together (one counter update per batch); a worker killed before that leaves them in
        `sending`, later `unknown`: never sent twice. A pause, a stop, the end of the send
        window or a transient error gives the rest back unsent."""
        campaign, outcome, connection = self.campaign, self.outcome, pick.connection
        provider = self.provider(connection)
        sent: dict[int, str] = {}
        checked_at = time.monotonic()
        if pick.slot_at is not None and pick.slot_at > time.monotonic():
            time.sleep(pick.slot_at - time.monotonic())
        for index, item in enumerate(items):
            # The claim checked the status; later items of a batch re-check it at most every
            # 0.3 s (not before each send: that query would cost as much as recording the
            # sends), so that a pause still stops new sends within a second.
            if time.monotonic() - checked_at > 0.3:
                if _stopped(campaign.pk):
                    release(campaign.pk, items[index:], connection.pk)
                    outcome.stopped = "stopped"
                    break
                checked_at = time.monotonic()
            if (campaign.send_window or campaign.skip_dates) and not pacing.window_status(campaign)[0]:
                release(campaign.pk, items[index:], connection.pk)
                break  # the next pass of the loop waits for the window
            message = self.message(item)
            try:
                result = provider.send(message)
            except ProviderError as error:
                log.info("[CAMPAIGN] delivery %s: %s error %s", item.id, error.kind, error.code)
                record_failure(campaign, item, error, outcome, connection.pk)
                self.errors_seen = True
                if outcome.stopped or error.kind == "transient":
                    release(campaign.pk, items[index + 1 :], connection.pk)
                    break
                continue
            sent[item.id] = result.message_id
            outcome.sent += 1
            if self.errors_seen:
                Campaign.record_provider_success(campaign.pk)
                self.errors_seen = False
        record_sent(campaign.pk, campaign.tenant_id, sent)

    def message(self, item: Claimed) -> OutgoingMessage:
        template, typing = self.campaign.template, self.campaign.typing_seconds
        if template is None:
            return OutgoingMessage(phone=item.phone, text=item.text, media=self.media.get(), typing_seconds=typing)
        outgoing = template_message(template, item.template_values or {}, self.header_media.get())
        return OutgoingMessage(phone=item.phone, text=item.text, template=outgoing, typing_seconds=typing)


def _template_refusal(campaign: Campaign) -> str:
    """Why CAMPAIGN's template may not be sent now ("" when it may)."""
    template = campaign.template
    if template is None or template.is_approved:
        return ""
    return template.blocked_reason()


def campaign_connections(campaign: Campaign) -> list[Connection]:
    """CAMPAIGN's connections, the primary first (one query)."""
    ids = campaign.all_connection_ids()
    found = {c.pk: c for c in Connection.objects.filter(pk__in=ids)}
    return [found[pk] for pk in ids if pk in found]


def dispatch(campaign_id: UUID | str, *, slice_seconds: float = SLICE_SECONDS) -> Outcome:
    """Send the campaign's pending deliveries for up to SLICE_SECONDS. The outcome's
    `reschedule_in` says when the caller should run this again (None: no need)."""
    campaign = (
        Campaign.objects.select_related("connection", "media", "template", "header_media")
        .filter(pk=campaign_id)
        .first()
    )
    if campaign is None or campaign.status != Campaign.Status.RUNNING:
        return Outcome()
    connections = campaign_connections(campaign)
    active = [c for c in connections if c.is_active]
    refusal = provider_class(connections[0].provider).disabled_reason() if active else ""
    if not active:
        refusal = "The connection is disabled." if len(connections) == 1 else "Every connection is disabled."
    refusal = refusal or _template_refusal(campaign)
    if refusal:
        with transaction.atomic():
            campaign.pause(refusal)
            if campaign.template is not None and refusal == _template_refusal(campaign):
                CampaignActivity.record(
                    campaign,
                    CampaignActivity.Kind.TEMPLATE,
                    refusal,
                    template=campaign.template.name,
                    status=campaign.template.status,
                )
            else:
                CampaignActivity.record(campaign, "paused", refusal, reason="connection")
            broadcast_stats_on_commit(campaign.pk)
        return Outcome()
    run = _Run(campaign, active, slice_seconds)
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
