"""Webhook figures for the ops page: accepted and rejected calls, and the backlog."""

from __future__ import annotations

import zoneinfo
from datetime import date, timedelta

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import Connection, WebhookEvent, WebhookRejection
from campaigns.pacing import sent_today
from sense.models import Tenant
from sense.ops import OpsFigure


def figures(tenant: Tenant, days: list[date]) -> list[OpsFigure]:
    start = days[0]
    received = dict(
        WebhookEvent.objects.filter(tenant=tenant, received_at__date__gte=start)
        .annotate(day=TruncDate("received_at"))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    rejected = dict(
        WebhookRejection.objects.filter(tenant=tenant, day__gte=start)
        .values_list("day")
        .annotate(n=Sum("count"))
        .values_list("day", "n")
    )
    last_hour = WebhookEvent.objects.filter(tenant=tenant, received_at__gte=timezone.now() - timedelta(hours=1)).count()
    backlog = WebhookEvent.objects.filter(tenant=tenant, status=WebhookEvent.Status.PENDING).count()
    return [
        OpsFigure(
            "webhook_rate",
            _("Webhooks per minute (last hour)"),
            round(last_hour / 60, 1),
            "/min",
            series=[float(received.get(d, 0)) for d in days],
        ),
        OpsFigure(
            "webhooks_rejected",
            _("Rejected webhook calls (7 days)"),
            float(sum(rejected.values())),
            "",
            _("0"),
            sum(rejected.values()) == 0,
            [float(rejected.get(d, 0)) for d in days],
        ),
        OpsFigure("webhook_backlog", _("Webhook events waiting"), float(backlog), "", "< 1000", backlog < 1000),
        *connection_figures(tenant),
    ]


def connection_figures(tenant: Tenant) -> list[OpsFigure]:
    """One line per active connection: its sends today against its daily limit, its state
    (as the gateway last reported it) and since when; not ok when down or at its limit."""
    connections = list(Connection.objects.for_tenant(tenant).filter(is_active=True).order_by("name"))
    sent = sent_today(c.pk for c in connections)
    zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    out = []
    for connection in connections:
        label = f"{connection.name}: {connection.get_state_display().lower()}"
        if connection.state_since:
            label += " " + _("since %(when)s") % {"when": f"{connection.state_since.astimezone(zone):%Y-%m-%d %H:%M}"}
        if connection.state_reason and not connection.can_send:
            label += f" ({connection.state_reason})"
        today = sent.get(connection.pk, 0)
        limit = connection.daily_limit
        ok = connection.can_send and (limit is None or today < limit)
        target = _("≤ %(n)d today") % {"n": limit} if limit is not None else ""
        out.append(OpsFigure(f"connection_{connection.pk}", label, float(today), " " + _("sent today"), target, ok))
    return out
