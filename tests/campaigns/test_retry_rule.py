"""The retry rule is one rule: for every kind of failure, `Delivery.retryable_at()` (what the
delivery modal and the API show) and `DeliveryQuerySet.retryable(now)` (what a retry acts
on) give the same answer, and the retry endpoint requeues exactly what they call retryable."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import dateformat, timezone

from campaigns import services
from campaigns.models import Campaign, Connection, Contact, Delivery, MessageTemplate
from tests.conftest import ApiClient

_phones = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_senders(monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "_enqueue_senders", lambda campaign_id: None)


@dataclass(frozen=True)
class Case:
    code: str
    expect: str  # "now": retryable from its failure on; "after": 24 h after it; "never"
    campaign: str = "free_text"  # free_text or template (Cloud), evolution
    status: str = Delivery.Status.FAILED
    ago: timedelta | None = timedelta(minutes=5)  # None: the failure time was not recorded
    message: str = ""
    contact: str = "subscribed"  # subscribed, opted_out, erased


CASES = {
    "plain failure": Case("131051", "now"),
    "server error on evolution": Case("500", "now", campaign="evolution"),
    "failure time unknown": Case("500", "now", ago=None),
    "131026 undeliverable": Case("131026", "never"),
    "not_on_whatsapp": Case("not_on_whatsapp", "never", campaign="evolution"),
    "not_on_whatsapp legacy text": Case(
        "400", "never", campaign="evolution", message="number is not on WhatsApp (5511900000001)"
    ),
    "131050 stopped marketing": Case("131050", "never"),
    "131047 free text": Case("131047", "never"),
    "131047 template": Case("131047", "now", campaign="template"),
    "131049 two hours ago": Case("131049", "after", ago=timedelta(hours=2)),
    "131049 a day and an hour ago": Case("131049", "after", ago=timedelta(hours=25)),
    "131049 failure time unknown": Case("131049", "after", ago=None),
    "opted-out contact": Case("131051", "never", contact="opted_out"),
    "erased contact": Case("131051", "never", contact="erased"),
    "not failed (sent)": Case("", "never", status=Delivery.Status.SENT),
    "unknown outcome": Case("timeout", "never", status=Delivery.Status.UNKNOWN),
}
# What a retry right now sends again (the table above, spelled out).
RETRIED_NOW = {
    "plain failure",
    "server error on evolution",
    "failure time unknown",
    "131047 template",
    "131049 a day and an hour ago",
}


@pytest.fixture
def campaigns(cloud: Connection, evolution: Connection, make_campaign: Any) -> dict[str, Campaign]:
    def finished(connection: Connection, **fields: Any) -> Campaign:
        return make_campaign(connection, status=Campaign.Status.FINISHED, finished_at=timezone.now(), **fields)

    template = MessageTemplate.objects.create(
        tenant=cloud.tenant, connection=cloud, name="promo", language="pt_BR", status="APPROVED"
    )
    return {
        "free_text": finished(cloud, name="Free text"),
        "template": finished(cloud, name="Template", template=template),
        "evolution": finished(evolution, name="Evolution"),
    }


def make_delivery(campaigns: dict[str, Campaign], case: Case) -> Delivery:
    campaign = campaigns[case.campaign]
    phone = f"+55119{next(_phones):08d}"
    contact = None
    if case.contact != "erased":
        contact = Contact.objects.create(
            tenant=campaign.tenant, phone=phone, name="Ana", opted_out=case.contact == "opted_out"
        )
    failed_at = timezone.now() - case.ago if case.ago is not None and case.status == "failed" else None
    delivery = Delivery.objects.create(
        tenant=campaign.tenant,
        campaign=campaign,
        contact=contact,
        phone=phone,
        text="Hi",
        status=case.status,
        attempts=1,
        error_code=case.code,
        error_message=case.message or f"error {case.code}",
        failed_at=failed_at,
    )
    if case.ago is not None:
        # The row's last change is its failure (updated_at is what retryable_at starts from
        # when the failure time is unknown).
        Delivery.objects.filter(pk=delivery.pk).update(updated_at=timezone.now() - case.ago)
    return loaded(delivery.pk)


def loaded(pk: int) -> Delivery:
    """The delivery as the modal and the API read it."""
    return Delivery.objects.select_related("campaign__connection", "contact").get(pk=pk)


def expected_at(delivery: Delivery, case: Case) -> datetime | None:
    if case.expect == "never":
        return None
    start = delivery.failed_at or delivery.updated_at
    return start + timedelta(hours=24) if case.expect == "after" else start


@pytest.mark.parametrize("name", list(CASES))
def test_retryable_at_and_the_queryset_filter_agree(campaigns: dict[str, Campaign], name: str) -> None:
    case = CASES[name]
    delivery = make_delivery(campaigns, case)

    at = delivery.retryable_at()

    assert at == expected_at(delivery, case)
    assert bool(delivery.not_retryable_reason()) == (case.expect == "never")
    now = timezone.now()
    for when in (now, now + timedelta(hours=23), now + timedelta(hours=25)):
        in_filter = Delivery.objects.filter(pk=delivery.pk).retryable(when).exists()
        assert in_filter == (at is not None and at <= when), (name, when - now)


def test_the_retry_endpoint_requeues_exactly_what_retryable_at_says(
    api_alice: ApiClient, campaigns: dict[str, Campaign]
) -> None:
    rows = {name: make_delivery(campaigns, case) for name, case in CASES.items()}
    services.campaign_recalc_stats(campaign_ids=[c.pk for c in campaigns.values()])  # rows inserted here
    now = timezone.now()
    retryable = {name for name, d in rows.items() if (at := d.retryable_at()) is not None and at <= now}
    assert retryable == RETRIED_NOW

    requeued = 0
    for campaign in campaigns.values():
        response = api_alice.post_json(f"/api/campaigns/{campaign.id}/retry/")
        assert response.status_code == 200, response.content
        requeued += response.json()["requeued"]

    pending = {name for name, d in rows.items() if loaded(d.pk).status == Delivery.Status.PENDING}
    assert pending == RETRIED_NOW and requeued == len(RETRIED_NOW)
    assert services.campaign_recalc_stats(campaign_ids=[c.pk for c in campaigns.values()], fix=False) == []


def test_the_modal_and_the_api_show_why_not_and_from_when(
    alice: Any, api_alice: ApiClient, campaigns: dict[str, Campaign]
) -> None:
    undeliverable = make_delivery(campaigns, CASES["131026 undeliverable"])
    capped = make_delivery(campaigns, CASES["131049 two hours ago"])
    client = Client(HTTP_ACCEPT_LANGUAGE="en")  # pages speak pt-BR by default
    client.force_login(alice)

    modal = client.get(reverse("campaigns:delivery", args=[undeliverable.id]), HTTP_HX_REQUEST="true").content.decode()
    assert "Not to be retried." in modal and "sending it again fails the same way" in modal
    modal = client.get(reverse("campaigns:delivery", args=[capped.id]), HTTP_HX_REQUEST="true").content.decode()
    at = capped.retryable_at()
    assert at is not None
    assert "Retryable from" in modal and f'datetime="{dateformat.format(timezone.localtime(at), "c")}"' in modal

    campaign = campaigns["free_text"]
    items = {i["id"]: i for i in api_alice.get_json(f"/api/campaigns/{campaign.id}/deliveries/").json()["items"]}
    assert items[undeliverable.id]["retryable_at"] is None
    assert "fails the same way" in items[undeliverable.id]["not_retryable_reason"]
    assert items[capped.id]["not_retryable_reason"] is None
    assert items[capped.id]["retryable_at"] is not None
