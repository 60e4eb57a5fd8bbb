"""What a campaign's page and API report beyond its counters: failures grouped by the
provider's error code, billable messages by Meta's pricing category, and the cost those
come to with CLOUD_PRICE_TABLE. Each is one GROUP BY over a partial index of the
campaign's deliveries (failed ones; billable ones), fast at hundreds of thousands of rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count

from campaigns import snapshot
from campaigns.models import Campaign, Connection, Delivery
from campaigns.providers import ErrorInfo, error_info


@dataclass(frozen=True)
class FailureGroup:
    code: str  # "" for failures without a code
    count: int
    info: ErrorInfo | None  # title, guidance and action, when the provider explains the code


def failures_by_code(campaign: Campaign) -> list[FailureGroup]:
    """CAMPAIGN's failed deliveries counted by error code, the most frequent first."""
    rows = (
        Delivery.objects.filter(campaign=campaign, status=Delivery.Status.FAILED)
        .order_by()
        .values_list("error_code")
        .annotate(n=Count("*"))
    )
    provider = campaign.connection.provider
    groups = [FailureGroup(code, n, error_info(provider, code)) for code, n in rows]
    return sorted(groups, key=lambda g: (-g.count, g.code))


def billable_by_category(campaign: Campaign) -> dict[str, int]:
    """CAMPAIGN's deliveries the provider reported billable, by pricing category ("" when it
    named none), the largest first."""
    rows = (
        Delivery.objects.filter(campaign=campaign, billable=True)
        .order_by()
        .values_list("pricing_category")
        .annotate(n=Count("*"))
    )
    return dict(sorted(rows, key=lambda row: (-row[1], row[0])))


def estimate_category(campaign: Campaign) -> str:
    """The pricing category CAMPAIGN's messages are expected to be charged as: its template's
    category (marketing, utility, authentication); free text is a service message (only
    deliverable inside the contact's 24-hour window)."""
    if campaign.template_id and campaign.template is not None and campaign.template.category:
        return str(campaign.template.category).lower()
    return "service"


def audience(campaign: Campaign) -> int:
    """How many messages CAMPAIGN sends: its deliveries once its audience snapshot was taken
    (or is being taken), else the sendable contacts its tags select now."""
    if campaign.prepared_at is not None or campaign.is_preparing or campaign.stat_total:
        return campaign.audience_count or campaign.stat_total
    return snapshot.audience(campaign).count()


def cost(campaign: Campaign, billable: dict[str, int] | None = None) -> dict[str, Any] | None:
    """CAMPAIGN's cost from CLOUD_PRICE_TABLE, or None without a table or for a connection
    Meta does not bill (not the Cloud API):

    - `estimated`: its audience times the price of its category (None when the table has no
      price for that category);
    - `running`: its billable messages so far (BILLABLE, from `billable_by_category`, when
      the caller has it) times the price of each one's category; categories the table does
      not price are listed in `unpriced` and count as 0.
    """
    table = settings.CLOUD_PRICE_TABLE
    if not table or campaign.connection.provider != Connection.Provider.CLOUD:
        return None
    if billable is None:
        billable = billable_by_category(campaign)
    category = estimate_category(campaign)
    unit = table.get(category)
    size = audience(campaign)
    running = sum(n * float(table.get(cat, 0)) for cat, n in billable.items())
    return {
        "currency": str(table.get("currency", "")),
        "category": category,
        "unit_price": None if unit is None else float(unit),
        "audience": size,
        "estimated": None if unit is None else round(size * float(unit), 4),
        "billable": sum(billable.values()),
        "running": round(running, 4),
        "unpriced": sorted(cat or "?" for cat in billable if cat not in table),
    }
