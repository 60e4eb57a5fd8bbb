"""Webhook figures for the ops page: accepted and rejected calls, and the backlog."""

from __future__ import annotations

from datetime import date, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import WebhookEvent, WebhookRejection
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
    ]
