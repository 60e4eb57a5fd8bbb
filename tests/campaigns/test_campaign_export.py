"""The deliveries CSV export: every delivery, UTF-8 with a BOM, `;` on request, streamed in
bounded memory, for token and session callers alike."""

from __future__ import annotations

import csv
import io
import tracemalloc
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign, Delivery
from tests.campaigns.test_contact_import_api import streamed
from tests.conftest import ApiClient
from tests.dashboard.conftest import login


def rows_of(body: str, sep: str = ",") -> list[list[str]]:
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body.removeprefix("\ufeff")), delimiter=sep))


def test_it_exports_every_delivery_with_its_contact_and_times(
    api_alice: ApiClient, evolution: Any, make_contacts: Any, make_campaign: Any
) -> None:
    maria, joao = make_contacts(2)
    campaign = make_campaign(evolution, status=Campaign.Status.RUNNING)
    Delivery.objects.create(
        tenant=campaign.tenant,
        campaign=campaign,
        contact=maria,
        phone=maria.phone,
        text="Oi",
        status="read",
        sent_at=timezone.now(),
        read_at=timezone.now(),
        variant=2,
        connection=evolution,
    )
    Delivery.objects.create(
        tenant=campaign.tenant,
        campaign=campaign,
        contact=joao,
        phone=joao.phone,
        text="Oi",
        status="failed",
        failed_at=timezone.now(),
        error_code="131026",
        error_message='=HYPERLINK("x")',
    )
    maria.name = "Maria Conceição"
    maria.save()

    response = api_alice.get(
        f"/api/campaigns/{campaign.id}/deliveries.csv", HTTP_AUTHORIZATION=f"Bearer {api_alice.token}"
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        response["Content-Disposition"] == f'attachment; filename="spring-sale-{str(campaign.pk)[:8]}-deliveries.csv"'
    )
    header, first, second = rows_of(streamed(response))
    assert header == [
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
    assert first[:5] == [maria.phone, "Maria Conceição", "read", evolution.name, "2"]
    assert first[5] and first[7] and not first[8]
    # Went out before rotation recorded a connection: the campaign's; formulas are defused.
    assert second[3] == evolution.name and second[10] == "131026" and second[11] == '\'=HYPERLINK("x")'


def test_a_semicolon_for_the_brazilian_locale_and_nothing_else(
    api_alice: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution)
    auth = f"Bearer {api_alice.token}"
    body = streamed(api_alice.get(f"/api/campaigns/{campaign.id}/deliveries.csv?sep=;", HTTP_AUTHORIZATION=auth))
    assert rows_of(body, ";")[0][:2] == ["phone", "contact_name"]

    refused = api_alice.get(f"/api/campaigns/{campaign.id}/deliveries.csv?sep=|", HTTP_AUTHORIZATION=auth)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_sep"


def test_a_browser_session_downloads_it_and_another_tenant_gets_a_404(
    alice: Any, api_charlie: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution)
    response = login("alice").get(f"/api/campaigns/{campaign.id}/deliveries.csv")
    assert response.status_code == 200 and rows_of(streamed(response))[0][0] == "phone"
    page = login("alice").get(f"/campaigns/{campaign.id}/").content.decode()
    assert f'href="/api/campaigns/{campaign.id}/deliveries.csv"' in page

    other = api_charlie.get(
        f"/api/campaigns/{campaign.id}/deliveries.csv", HTTP_AUTHORIZATION=f"Bearer {api_charlie.token}"
    )
    assert other.status_code == 404


ROWS = 100_000


def test_a_100k_delivery_campaign_streams_in_flat_memory(
    api_alice: ApiClient, evolution: Any, make_campaign: Any
) -> None:
    campaign = make_campaign(evolution, status=Campaign.Status.FINISHED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Delivery._meta.db_table}
                (tenant_id, campaign_id, phone, text, status, attempts, error_code, error_message,
                 sent_at, pricing_category, created_at, updated_at)
            SELECT %s, %s, '+55119' || lpad(n::text, 8, '0'), 'Oi', 'sent', 1, '', 'a longer error text ' || n,
                   now(), '', now(), now()
            FROM generate_series(1, %s) AS n
            """,
            [campaign.tenant_id, campaign.pk, ROWS],
        )
    response: Any = api_alice.get(
        f"/api/campaigns/{campaign.id}/deliveries.csv", HTTP_AUTHORIZATION=f"Bearer {api_alice.token}"
    )
    assert response.is_async  # read as the ASGI server reads it: chunk after chunk

    async def consume() -> tuple[int, int, int]:
        size = lines = largest = 0
        async for part in response.streaming_content:
            size += len(part)
            lines += part.count(b"\n")
            largest = max(largest, len(part))
        return size, lines, largest

    tracemalloc.start()
    try:
        size, lines, largest = async_to_sync(consume)()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert lines == ROWS + 1
    # The rows as Python objects (or the whole body) take tens of megabytes; chunks stay
    # small, and so does everything held at once.
    assert size > 5_000_000
    assert largest < size / 20
    # Measured: about a quarter of the body at most (2,000-row chunks); a list of the rows
    # peaks near ten times the body, the body joined at once near one body.
    assert peak < size / 2, (peak, size)
