"""Safe sending: what may go out now, on which connection, and why a campaign waits.

- **Send window** (`window_status`): a campaign's `send_window` (ISO weekdays, start and
  end times in TIME_ZONE) and `skip_dates`; pure Python on the campaign row, checked by the
  sender before every send, so nothing is handed to a provider outside the window.
- **Daily cap** (`ConnectionDay`): one counter row per connection and day (TIME_ZONE),
  locked in the claim's transaction (`campaigns.sending.claim`) and moved by the number of
  deliveries claimed, so no number of workers can claim past `Connection.daily_limit`.
- **Rotation** (`rotation_order`): the order in which a sender tries a campaign's
  connections: round robin, or fewest sends today first.
- **Pacing** (`campaigns.ratelimit.Limiter.pace`): the random gap between two sends of one
  connection, shared in Redis by every worker and campaign.
- **Waiting** (`campaign_wait`, `campaign_continue`): a running campaign that may not send
  now says why and until when, once per wait, in its row, its activity log and live frames.
- **Connection health** (`connection_state_apply`): Evolution's `connection.update`.
"""

from __future__ import annotations

import logging
import random
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from campaigns import ratelimit
from campaigns.live import broadcast_stats_on_commit
from campaigns.models import Campaign, CampaignActivity, Connection, ConnectionDay

log = logging.getLogger("sense.campaigns")

# Added to every random gap: covers the time from reserving a slot to the request reaching
# the provider, so that the gap the provider sees is never below the minimum.
PACE_SLACK = 0.05


def _zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def today(now: datetime | None = None) -> date:
    """The calendar day in TIME_ZONE that daily caps count."""
    return (now or timezone.now()).astimezone(_zone()).date()


def next_day_start(now: datetime | None = None) -> datetime:
    """Midnight (TIME_ZONE) after NOW: when daily caps start again."""
    tomorrow = today(now) + timedelta(days=1)
    return datetime.combine(tomorrow, time(0, 0), tzinfo=_zone())


def parse_hhmm(value: Any) -> time:
    """ "09:00" (or "09:00:30") -> time(9, 0); "24:00" is the end of the day. Raises ValueError."""
    text = str(value or "").strip()
    if text in ("24:00", "24:00:00"):
        return time.max
    parts = text.split(":")
    if len(parts) not in (2, 3) or any(len(p) != 2 or not p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not HH:MM")
    numbers = [int(p) for p in parts]
    return time(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 0)  # ValueError when out of range


def window_status(campaign: Campaign, now: datetime | None = None) -> tuple[bool, datetime | None]:
    """(True, None) when CAMPAIGN may send at NOW; else (False, the next opening of its
    window, or None when it never opens again)."""
    window, skip = campaign.send_window, set(campaign.skip_dates or [])
    if not window and not skip:
        return True, None
    local = (now or timezone.now()).astimezone(_zone())
    days = set(window.get("days") or range(1, 8)) if window else set(range(1, 8))
    start = parse_hhmm(window["start"]) if window else time(0, 0)
    end = parse_hhmm(window["end"]) if window else time.max

    def allowed(day: date) -> bool:
        return day.isoweekday() in days and day.isoformat() not in skip

    if allowed(local.date()) and start <= local.time().replace(tzinfo=None) < end:
        return True, None
    for offset in range(0, 400):
        day = local.date() + timedelta(days=offset)
        if not allowed(day):
            continue
        opening = datetime.combine(day, start, tzinfo=_zone())
        if opening > local:
            return False, opening
    return False, None


# --- Daily counters ---------------------------------------------------------------------


def lock_day(connection: Connection, day: date) -> int:
    """Inside the caller's transaction: lock CONNECTION's counter row of DAY (created when
    missing) and return how many it has sent that day."""
    row = ConnectionDay.objects.select_for_update().filter(connection_id=connection.pk, day=day)
    sent = row.values_list("sent", flat=True).first()
    if sent is None:
        ConnectionDay.objects.bulk_create(
            [ConnectionDay(tenant_id=connection.tenant_id, connection_id=connection.pk, day=day)],
            ignore_conflicts=True,
        )
        sent = row.values_list("sent", flat=True).first() or 0
    return int(sent)


def count_sends(connection_id: Any, day: date, n: int, *, tenant_id: Any = None) -> None:
    """Add N (negative: give back) to CONNECTION_ID's counter row of DAY; with TENANT_ID,
    the row is created when missing."""
    if not n:
        return
    row = ConnectionDay.objects.filter(connection_id=connection_id, day=day)
    if row.update(sent=F("sent") + n) or tenant_id is None or n < 0:
        return
    ConnectionDay.objects.bulk_create(
        [ConnectionDay(tenant_id=tenant_id, connection_id=connection_id, day=day)], ignore_conflicts=True
    )
    row.update(sent=F("sent") + n)


def report_limit(campaign: Campaign, connection: Connection, day: date) -> None:
    """The first time on DAY that CONNECTION's limit stops a claim: one activity line, in
    CAMPAIGN's log (the campaign that hit it)."""
    with transaction.atomic():
        first = ConnectionDay.objects.filter(
            connection_id=connection.pk, day=day, limit_reached_at__isnull=True
        ).update(limit_reached_at=timezone.now())
        if first:
            message = f"Connection {connection.name} reached its daily limit of {connection.daily_limit}"
            CampaignActivity.record(
                campaign, CampaignActivity.Kind.LIMIT, message, connection_id=str(connection.pk), day=day.isoformat()
            )


def sent_today(connection_ids: Iterable[Any], day: date | None = None) -> dict[Any, int]:
    """Sends of each connection today (one query)."""
    rows = ConnectionDay.objects.filter(connection_id__in=list(connection_ids), day=day or today())
    return dict(rows.values_list("connection_id", "sent"))


# --- Rotation ----------------------------------------------------------------------------


def rotation_order(campaign: Campaign, connections: Sequence[Connection]) -> list[Connection]:
    """CONNECTIONS in the order a sender tries them: round robin (each pick starts one
    further, on a counter every process shares) or least used (fewest sends today first,
    one query)."""
    if len(connections) <= 1:
        return list(connections)
    if campaign.rotation == Campaign.Rotation.LEAST_USED:
        counts = sent_today(c.pk for c in connections)
        return sorted(connections, key=lambda c: (counts.get(c.pk, 0), str(c.pk)))
    start = ratelimit.limiter().turn(f"campaign:{campaign.pk}") % len(connections)
    return [*connections[start:], *connections[:start]]


def random_gap(campaign: Campaign) -> float:
    """Seconds until the connection's next send: uniform in the campaign's interval."""
    low, high = campaign.interval_min_seconds, max(campaign.interval_min_seconds, campaign.interval_max_seconds)
    return random.uniform(low, high) + PACE_SLACK


# --- Waiting ---------------------------------------------------------------------------------

WAIT_MESSAGES: dict[str, str] = {
    Campaign.Waiting.WINDOW: "Waiting for the send window",
    Campaign.Waiting.DAILY_LIMIT: "Every connection reached its daily limit",
    Campaign.Waiting.CONNECTION: "No connection can send (every one is disabled or down)",
}


def campaign_wait(campaign: Campaign, reason: str, until: datetime | None) -> None:
    """CAMPAIGN (running) waits for REASON until UNTIL (None: unknown). The activity line is
    written once per wait: by the sender whose conditional UPDATE changed the reason."""
    with transaction.atomic():
        running = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.RUNNING)
        if running.exclude(waiting_reason=reason).update(waiting_reason=reason, next_send_at=until):
            message = WAIT_MESSAGES.get(reason, reason)
            if until is not None:
                message += f" until {until.astimezone(_zone()):%Y-%m-%d %H:%M}"
            CampaignActivity.record(
                campaign, CampaignActivity.Kind.WAITING, message, reason=reason, until=until and until.isoformat()
            )
            broadcast_stats_on_commit(campaign.pk)
            log.info("[CAMPAIGN] %s waiting: %s", campaign.pk, reason)
        elif running.exclude(next_send_at=until).update(next_send_at=until):
            broadcast_stats_on_commit(campaign.pk)
    campaign.waiting_reason, campaign.next_send_at = reason, until


def campaign_continue(campaign: Campaign) -> bool:
    """End CAMPAIGN's wait, if it was waiting (one activity line); True when it was."""
    with transaction.atomic():
        was = (
            Campaign.objects.filter(pk=campaign.pk).exclude(waiting_reason="").values_list("waiting_reason", flat=True)
        )
        reason = was.first()
        if reason is None:
            return False
        if not Campaign.objects.filter(pk=campaign.pk, waiting_reason=reason).update(
            waiting_reason="", next_send_at=None
        ):
            return False
        CampaignActivity.record(campaign, CampaignActivity.Kind.CONTINUED, "Sending again", after=reason)
        broadcast_stats_on_commit(campaign.pk)
    campaign.waiting_reason, campaign.next_send_at = "", None
    log.info("[CAMPAIGN] %s continues after waiting (%s)", campaign.pk, reason)
    return True


# --- Connection health -----------------------------------------------------------------------


def campaigns_using(connection_id: Any, statuses: Iterable[str]) -> list[Campaign]:
    """Campaigns in STATUSES that send (or may send) through CONNECTION_ID."""
    return list(
        Campaign.objects.filter(Q(connection_id=connection_id) | Q(extra_connections__id=connection_id))
        .filter(status__in=list(statuses))
        .distinct()
    )


def connection_state_apply(*, connection_id: Any, state: str, reason: str, occurred_at: datetime) -> bool:
    """Record that CONNECTION_ID's gateway session is in STATE (open, connecting, close,
    refused) since OCCURRED_AT, unless a later report was applied already. The campaigns
    using it get an activity line; when it opens, running campaigns waiting for a
    connection are woken. Returns True when the state changed."""
    if state not in Connection.State.values or not state:
        return False
    with transaction.atomic():
        newer = Q(state_since__isnull=True) | Q(state_since__lte=occurred_at)
        changed = (
            Connection.objects.filter(newer, pk=connection_id)
            .exclude(state=state)
            .update(state=state, state_reason=reason[:200], state_since=occurred_at)
        )
        if not changed:
            Connection.objects.filter(newer, pk=connection_id, state=state).update(state_reason=reason[:200])
            return False
        connection = Connection.objects.get(pk=connection_id)
        active = (Campaign.Status.PREPARING, Campaign.Status.RUNNING, Campaign.Status.PAUSED)
        for campaign in campaigns_using(connection_id, active):
            label = Connection.State(state).label
            message = f"Connection {connection.name} is {str(label).lower()}" + (f" ({reason})" if reason else "")
            CampaignActivity.record(
                campaign, CampaignActivity.Kind.CONNECTION, message, connection_id=str(connection_id), state=state
            )
            # Its senders stopped when no connection was left (the kick polls it meanwhile).
            waiting = campaign.waiting_reason == Campaign.Waiting.CONNECTION
            if state == Connection.State.OPEN and campaign.status == Campaign.Status.RUNNING and waiting:
                _wake(campaign)
    log.info("[CAMPAIGN] connection %s is %s (%s)", connection_id, state, reason)
    return True


def _wake(campaign: Campaign) -> None:
    """Enqueue CAMPAIGN's senders on commit (a campaign waiting for a connection). The actor
    is looked up by name: campaigns.tasks imports the webhook worker, which imports this."""
    dispatch_campaign = dramatiq.get_broker().get_actor("dispatch_campaign")
    Campaign.objects.filter(pk=campaign.pk).update(dispatch_seen_at=timezone.now())
    campaign_id = str(campaign.pk)

    def send() -> None:
        for _ in range(settings.CAMPAIGN_SENDERS):
            dispatch_campaign.send(campaign_id)

    transaction.on_commit(send)
