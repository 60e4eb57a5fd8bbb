"""The ops page: the existing deployment's targets, green or red, 7-day charts, webhook and
queue figures, and the readiness of each dependency.

Apps contribute figures by registering a provider (in their AppConfig.ready):
`ops.register(func)` where `func(tenant, days) -> list[OpsFigure]`. The core imports no app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from sense.health import broker_connection, run_checks
from sense.models import Tenant
from sense.pagesupport import render_htmx, tenant_required
from sense.tenancy import TenantHttpRequest

log = logging.getLogger("sense.ops")


@dataclass
class OpsFigure:
    key: str
    label: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. "> 95%"
    ok: bool | None = None  # None: no target, or no data yet
    series: list[float] = field(default_factory=list)  # one value per day, oldest first

    def chart(self, width: int = 160, height: int = 36) -> str:
        """SVG polyline points for the 7-day series."""
        if not self.series:
            return ""
        peak = max([*self.series, 1e-9])
        step = width / max(1, len(self.series) - 1)
        return " ".join(f"{i * step:.1f},{height - (v / peak) * (height - 2):.1f}" for i, v in enumerate(self.series))


Provider = Callable[[Tenant, list[date]], list[OpsFigure]]
_providers: list[Provider] = []


def register(provider: Provider) -> Provider:
    if provider not in _providers:
        _providers.append(provider)
    return provider


def last_days(n: int = 7) -> list[date]:
    today = timezone.localdate()
    return [today - timedelta(days=n - 1 - i) for i in range(n)]


def queue_depths(*, broker_up: bool = True) -> dict[str, int | None]:
    """Messages waiting per Dramatiq queue (RabbitMQ: passive declares on a short-lived
    connection of its own, so a request thread never keeps a broker connection; embedded:
    the in-memory queues). None where unknown; all None without trying when BROKER_UP is
    false (the readiness check just failed to connect: no second wait for the timeout)."""
    import dramatiq

    broker = dramatiq.get_broker()
    names = sorted(q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
    if settings.TASKS_EMBEDDED:
        return {name: broker.queues[name].qsize() for name in names}  # type: ignore[attr-defined]
    depths: dict[str, int | None] = dict.fromkeys(names)
    if not broker_up:
        return depths
    try:
        connection = broker_connection()
    except Exception as exc:
        log.warning("[RABBITMQ] queue depths unavailable: %s", exc.__class__.__name__)
        return depths
    try:
        for name in names:
            try:
                channel = connection.channel()
                depths[name] = channel.queue_declare(name, passive=True).method.message_count
                channel.close()
            except Exception:  # a queue no worker declared yet
                depths[name] = None
    finally:
        connection.close()
    return depths


def figures_for(tenant: Tenant, days: list[date]) -> list[OpsFigure]:
    figures: list[OpsFigure] = []
    for provider in _providers:
        try:
            figures.extend(provider(tenant, days))
        except Exception:
            log.exception("ops provider %s failed", getattr(provider, "__name__", provider))
    return figures


@require_GET
@login_required
@tenant_required
def ops_page(request: TenantHttpRequest) -> HttpResponse:
    checks = run_checks()
    context = {
        "nav": "ops",
        "figures": figures_for(request.tenant, last_days(7)),
        "checks": checks,
        "queues": queue_depths(broker_up=checks["broker"].ok),
    }
    return render_htmx(request, "ops/ops.html", "#panels", context)
