"""The templates page, its sync button, and the composer's template section and preview."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from campaigns.models import Campaign, Connection, Contact, MessageTemplate
from media.models import Asset
from tests.campaigns.template_fixtures import ORDER_UPDATE, SPRING_SALE, WABA, WELCOME
from tests.dashboard.conftest import login
from tests.simulator import ProviderSimulator

HX = {"HX-Request": "true"}


@pytest.fixture
def waba_cloud(cloud: Connection) -> Connection:
    cloud.credentials = {**cloud.credentials, "waba_id": WABA}
    cloud.save(update_fields=["credentials"])
    return cloud


@pytest.fixture
def templates(waba_cloud: Connection) -> dict[str, MessageTemplate]:
    def make(name: str, components: list[dict[str, Any]], **fields: Any) -> MessageTemplate:
        fields.setdefault("status", "APPROVED")
        fields.setdefault("category", "MARKETING")
        return MessageTemplate.objects.create(
            tenant=waba_cloud.tenant,
            connection=waba_cloud,
            name=name,
            language="en_US",
            components=components,
            **fields,
        )

    return {
        "order_update": make("order_update", ORDER_UPDATE, category="UTILITY", quality_score="GREEN"),
        "spring_sale": make("spring_sale", SPRING_SALE, parameter_format="NAMED"),
        "rejected_one": make("rejected_one", WELCOME, status="REJECTED", status_reason="INVALID_FORMAT"),
    }


def test_the_templates_page_lists_each_cloud_connections_templates(
    alice: Any, templates: dict[str, MessageTemplate], evolution: Connection
) -> None:
    response = login("alice").get("/templates/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "order_update" in page and "spring_sale" in page and "rejected_one" in page
    assert "Approved" in page and "Rejected" in page and "UTILITY" in page and "GREEN" in page
    assert "Sync templates" in page
    assert "Evolution on the simulator" not in page  # no templates on Evolution
    assert 'href="/templates/"' in page  # the nav link
    filtered = login("alice").get("/templates/?status=REJECTED").content.decode()
    assert "rejected_one" in filtered and "order_update" not in filtered


def badges(page: str) -> dict[str, str]:
    """Each template row's name and the text of its status badge."""
    rows = re.findall(r"<strong>(\w+)</strong>.*?<span class=\"badge template-[^>]*>([^<]*)</span>", page, re.S)
    return dict(rows)


def test_the_status_badge_shows_the_filters_label_in_english_and_portuguese(
    alice: Any, templates: dict[str, MessageTemplate], waba_cloud: Connection
) -> None:
    for name, status in (("paused_one", "PAUSED"), ("new_one", "SOMETHING_NEW")):
        MessageTemplate.objects.create(
            tenant=waba_cloud.tenant, connection=waba_cloud, name=name, language="en_US", status=status
        )

    english = badges(login("alice").get("/templates/").content.decode())
    assert english == {
        "new_one": "SOMETHING_NEW",  # a status Sense has no label for, as Meta sent it
        "order_update": "Approved",
        "paused_one": "Paused",
        "rejected_one": "Rejected",
        "spring_sale": "Approved",
    }
    portuguese = badges(login("alice", "pt-br").get("/templates/").content.decode())
    assert portuguese == {
        "new_one": "SOMETHING_NEW",
        "order_update": "Aprovado",
        "paused_one": "Pausado",  # the template's, not the campaign's "Pausada"
        "rejected_one": "Rejeitado",
        "spring_sale": "Aprovado",
    }


def test_the_campaign_page_shows_its_templates_status_label(
    alice: Any, acme: Any, templates: dict[str, MessageTemplate], waba_cloud: Connection
) -> None:
    campaign = Campaign.objects.create(
        tenant=acme, name="Promo", connection=waba_cloud, template=templates["order_update"]
    )
    page = login("alice", "pt-br").get(f"/campaigns/{campaign.pk}/").content.decode()
    assert '<span class="badge template-approved">Aprovado</span>' in page


def test_the_sync_button_syncs_for_admins_only(
    sim: ProviderSimulator, alice: Any, bob: Any, waba_cloud: Connection
) -> None:
    sim.add_template(WABA, "welcome", components=WELCOME)
    response = login("bob").post(f"/templates/sync/{waba_cloud.pk}/")
    assert response.status_code == 403
    assert not MessageTemplate.objects.exists()

    response = login("alice").post(f"/templates/sync/{waba_cloud.pk}/", follow=True)
    assert "1 new" in response.content.decode()
    assert MessageTemplate.objects.get().name == "welcome"

    sim.access_tokens = {"other"}
    response = login("alice").post(f"/templates/sync/{waba_cloud.pk}/", follow=True)
    assert "access token" in response.content.decode()


def test_the_composer_offers_approved_templates_for_a_cloud_connection(
    alice: Any, acme: Any, templates: dict[str, MessageTemplate], evolution: Connection, waba_cloud: Connection
) -> None:
    Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana", attributes={"order": "A-1"})
    client = login("alice")
    section = client.get(f"/campaigns/template-fields/?connection={waba_cloud.pk}", headers=HX).content.decode()
    assert "24 hours" in section
    assert "order_update" in section and "spring_sale" in section and "rejected_one" not in section
    assert (
        client.get(f"/campaigns/template-fields/?connection={evolution.pk}", headers=HX)
        .content.decode()
        .count("option")
        == 0
    )

    chosen = client.get(
        f"/campaigns/template-fields/?connection={waba_cloud.pk}&template={templates['order_update'].pk}", headers=HX
    ).content.decode()
    for key in ("header.1", "1", "2", "button.0"):
        assert f'name="param:{key}"' in chosen
    assert "{{name}}" in chosen and "{{phone}}" in chosen and "{{order}}" in chosen  # the datalist

    preview = client.post(
        "/campaigns/preview/",
        {
            "connection": str(waba_cloud.pk),
            "template": str(templates["order_update"].pk),
            "param:header.1": "{{order}}",
            "param:1": "{{name}}",
            "param:2": "{{order}}",
            "param:button.0": "{{order}}",
        },
        headers=HX,
    ).content.decode()
    assert "Order A-1" in preview and "Hi Ana, your order A-1 ships today." in preview
    assert "Reply STOP to opt out" in preview and "Track" in preview and "Stop promotions" in preview


def test_the_composer_shows_the_header_media_picker_and_creates_a_template_campaign(
    alice: Any, acme: Any, templates: dict[str, MessageTemplate], waba_cloud: Connection
) -> None:
    image = Asset.objects.create(
        tenant=acme,
        original_name="sale.png",
        key=f"tenants/{acme.pk}/media/sale.png",
        file_type="image",
        mime_type="image/png",
        size=68,
        sha256="0" * 64,
        status=Asset.Status.READY,
    )
    client = login("alice")
    template = templates["spring_sale"]
    section = client.get(
        f"/campaigns/template-fields/?connection={waba_cloud.pk}&template={template.pk}", headers=HX
    ).content.decode()
    assert 'name="header_asset"' in section and "sale.png" in section

    form = {"name": "Sale", "connection": str(waba_cloud.pk), "message": "", "template": str(template.pk)}
    missing = client.post("/campaigns/new/", {**form, "param:first_name": "{{name}}"})
    assert missing.status_code == 200
    assert "Map every template parameter: discount" in missing.content.decode()
    assert not Campaign.objects.exists()

    response = client.post(
        "/campaigns/new/",
        {**form, "param:first_name": "{{name}}", "param:discount": "20%", "header_asset": str(image.pk)},
    )
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.template_id == template.pk and campaign.header_media_id == image.pk
    assert campaign.template_params == {"first_name": "{{name}}", "discount": "20%"}


def test_another_tenants_templates_stay_hidden(
    charlie: Any, templates: dict[str, MessageTemplate], waba_cloud: Connection
) -> None:
    client = login("charlie")
    assert "order_update" not in client.get("/templates/").content.decode()
    section = client.get(
        f"/campaigns/template-fields/?connection={waba_cloud.pk}&template={templates['order_update'].pk}", headers=HX
    ).content.decode()
    assert "order_update" not in section
    assert client.post(f"/templates/sync/{waba_cloud.pk}/").status_code == 404


def test_pages_need_a_login(waba_cloud: Connection) -> None:
    assert Client().get("/templates/").status_code == 302
