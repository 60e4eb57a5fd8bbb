"""The campaign page and API: failures grouped by error code with what to do, billable
messages by pricing category, and costs from CLOUD_PRICE_TABLE."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns import reports
from campaigns.models import Campaign, Connection, Contact, Delivery, MessageTemplate
from sense.models import Tenant
from tests.conftest import ApiClient

_n = itertools.count(1)


def add(campaign: Campaign, count: int, *, status: str = Delivery.Status.FAILED, **fields: Any) -> None:
    now = timezone.now()
    Delivery.objects.bulk_create(
        [
            Delivery(
                tenant_id=campaign.tenant_id,
                campaign=campaign,
                phone=f"+55119{next(_n):08d}",
                text="Hi",
                status=status,
                failed_at=now if status == Delivery.Status.FAILED else None,
                **fields,
            )
            for _ in range(count)
        ]
    )


@pytest.fixture
def finished(cloud: Connection, make_campaign: Any) -> Campaign:
    campaign = make_campaign(cloud, status=Campaign.Status.FINISHED, prepared_at=timezone.now())
    add(campaign, 3, error_code="131047", error_message="(#131047) Re-engagement message: more than 24 hours")
    add(campaign, 2, error_code="131026", error_message="(#131026) Message undeliverable")
    add(campaign, 1, error_code="999", error_message="Something new")
    add(campaign, 4, status=Delivery.Status.DELIVERED, billable=True, pricing_category="marketing")
    add(campaign, 1, status=Delivery.Status.READ, billable=True, pricing_category="utility")
    add(campaign, 2, status=Delivery.Status.DELIVERED, billable=False, pricing_category="service")
    Campaign.objects.filter(pk=campaign.pk).update(stat_total=13, audience_count=13, stat_failed=6)
    campaign.refresh_from_db()
    return campaign


def page(user: Any, path: str, **extra: Any) -> Any:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(user)
    return client.get(path, **extra)


def test_failures_are_grouped_by_code_most_frequent_first(finished: Campaign) -> None:
    groups = reports.failures_by_code(finished)

    assert [(g.code, g.count) for g in groups] == [("131047", 3), ("131026", 2), ("999", 1)]
    assert groups[0].info is not None and groups[0].info.title == "Re-engagement message"
    assert groups[2].info is None


def test_the_groupings_are_one_query_each(finished: Campaign) -> None:
    finished = Campaign.objects.select_related("connection").get(pk=finished.pk)  # as the page has it
    with CaptureQueriesContext(db) as queries:
        reports.failures_by_code(finished)
        reports.billable_by_category(finished)
    assert len(queries) == 2
    assert all("GROUP BY" in q["sql"] for q in queries.captured_queries)


def test_the_campaign_page_shows_failures_by_code_with_guidance(alice: Any, finished: Campaign) -> None:
    response = page(alice, reverse("campaigns:detail", args=[finished.id]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="failures-by-code"' in html
    assert 'data-failure-code="131047"' in html and "Outside the 24-hour window: use a template." in html
    assert 'data-failure-code="999"' in html and "Unexplained error" in html
    # The delivery log: code, title and the line of what to do.
    assert "<code data-error-code>131047</code>" in html
    assert "Message undeliverable" in html


def test_the_campaign_page_shows_billable_messages_by_category(alice: Any, finished: Campaign) -> None:
    html = page(alice, reverse("campaigns:detail", args=[finished.id])).content.decode()

    assert 'data-billable-category="marketing"' in html and 'data-billable-category="utility"' in html
    assert 'data-billable-category="service"' not in html  # not billable
    assert "data-cost" not in html  # no price table


def test_the_delivery_modal_shows_code_title_guidance_and_when_to_retry(alice: Any, finished: Campaign) -> None:
    delivery = Delivery.objects.filter(campaign=finished, error_code="131047").first()
    assert delivery is not None
    html = page(alice, reverse("campaigns:delivery", args=[delivery.id]), HTTP_HX_REQUEST="true").content.decode()

    assert "<code data-error-code>131047</code>" in html
    assert "Re-engagement message" in html and "use a template" in html
    assert "data-retryable" in html
    full = page(alice, reverse("campaigns:delivery", args=[delivery.id])).content.decode()  # without htmx
    assert "<code data-error-code>131047</code>" in full and "use a template" in full


def test_another_tenants_campaign_page_and_delivery_are_404(charlie: Any, finished: Campaign) -> None:
    delivery = Delivery.objects.filter(campaign=finished).first()
    assert delivery is not None
    assert page(charlie, reverse("campaigns:detail", args=[finished.id])).status_code == 404
    assert page(charlie, reverse("campaigns:delivery", args=[delivery.id])).status_code == 404


def test_the_api_reports_failures_billable_and_no_cost_without_a_table(
    api_alice: ApiClient, api_charlie: ApiClient, finished: Campaign
) -> None:
    body = api_alice.get_json(f"/api/campaigns/{finished.id}/").json()

    assert body["failures"][0] == {
        "code": "131047",
        "count": 3,
        "title": "Re-engagement message",
        "guidance": "Outside the 24-hour window: use a template.",
        "action": "never_free_text",
    }
    assert body["billable"] == {"marketing": 4, "utility": 1}
    assert body["cost"] is None
    assert api_charlie.get_json(f"/api/campaigns/{finished.id}/").status_code == 404


def test_api_deliveries_carry_the_error_title_guidance_and_retry_time(api_alice: ApiClient, finished: Campaign) -> None:
    body = api_alice.get_json(f"/api/campaigns/{finished.id}/deliveries/?status=failed").json()

    item = next(i for i in body["items"] if i["error_code"] == "131047")
    assert item["error_title"] == "Re-engagement message"
    assert item["error_guidance"] == "Outside the 24-hour window: use a template."
    # A free-text campaign's 131047 (and these deliveries' contacts are gone): never retried.
    assert item["retryable_at"] is None and item["not_retryable_reason"]


# --- Costs ----------------------------------------------------------------------------------------

TABLE = {"currency": "USD", "marketing": 0.0625, "utility": 0.008, "authentication": 0.0135}


def test_the_running_cost_is_billable_messages_times_their_price(settings: Any, finished: Campaign) -> None:
    settings.CLOUD_PRICE_TABLE = TABLE
    cost = reports.cost(finished)

    assert cost is not None
    assert cost["running"] == pytest.approx(4 * 0.0625 + 1 * 0.008)
    assert cost["billable"] == 5 and cost["currency"] == "USD"
    assert cost["category"] == "service" and cost["estimated"] is None  # free text: no service price
    assert cost["unpriced"] == []


def test_the_estimate_before_start_is_the_audience_times_the_templates_price(
    settings: Any, acme: Tenant, cloud: Connection, make_campaign: Any, make_contacts: Any, alice: Any
) -> None:
    settings.CLOUD_PRICE_TABLE = TABLE
    make_contacts(10, tags=["vip"])
    make_contacts(5, start=100)
    Contact.objects.filter(phone__endswith="0000000").update(opted_out=True)  # contact 0
    template = MessageTemplate.objects.create(
        tenant=acme, connection=cloud, name="promo", language="pt_BR", status="APPROVED", category="UTILITY"
    )
    campaign = make_campaign(cloud, tags=["vip"], template=template)

    cost = reports.cost(campaign)

    assert cost is not None
    assert (cost["audience"], cost["category"], cost["unit_price"]) == (9, "utility", 0.008)
    assert cost["estimated"] == pytest.approx(9 * 0.008) and cost["running"] == 0
    html = page(alice, reverse("campaigns:detail", args=[campaign.id])).content.decode()
    assert "data-cost-estimated" in html
    assert "USD 0,07" in html or "USD 0.07" in html  # in the page's locale


def test_the_api_shows_the_cost_with_a_table(settings: Any, api_alice: ApiClient, finished: Campaign) -> None:
    settings.CLOUD_PRICE_TABLE = {"marketing": 0.05}
    cost = api_alice.get_json(f"/api/campaigns/{finished.id}/").json()["cost"]

    assert cost["running"] == pytest.approx(0.2)
    assert cost["unpriced"] == ["utility"]
    assert cost["currency"] == ""


def test_no_cost_off_the_cloud_api(settings: Any, evolution: Connection, make_campaign: Any) -> None:
    settings.CLOUD_PRICE_TABLE = TABLE
    assert reports.cost(make_campaign(evolution)) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ("{nope", "not JSON"),
        ('{"marketng": 0.06}', "unknown category 'marketng'"),
        ('{"marketing": -1}', "at least 0"),
        ('{"marketing": "0.06"}', "at least 0"),
        ('{"currency": "dollars"}', "3-letter"),
    ],
)
def test_a_bad_price_table_stops_start_up_with_a_clear_message(monkeypatch: Any, raw: str, message: str) -> None:
    from sense import settings as sense_settings

    monkeypatch.setenv("CLOUD_PRICE_TABLE", raw)
    with pytest.raises(ImproperlyConfigured, match=f"CLOUD_PRICE_TABLE: .*{message}"):
        empty: dict[str, Any] = {}
        sense_settings._read("CLOUD_PRICE_TABLE", sense_settings._price_table, empty)


def test_a_good_price_table_is_read() -> None:
    from sense import settings as sense_settings

    assert sense_settings._price_table('{"currency": "BRL", "marketing": 0.35, "utility": 0}') == {
        "currency": "BRL",
        "marketing": 0.35,
        "utility": 0,
    }
