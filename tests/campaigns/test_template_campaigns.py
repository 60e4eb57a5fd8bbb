"""Campaigns that send Cloud API message templates: composing and its refusals, the audience
snapshot's rendered bodies and parameters, template sends as Meta validates them (the
simulator), end to end on a worker, and a template paused mid-campaign."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from campaigns import sending, services, tracking
from campaigns.models import Campaign, CampaignActivity, Connection, Contact, Delivery, MessageTemplate
from media.models import Asset
from sense.errors import ServiceError
from tests.campaigns.template_fixtures import ORDER_UPDATE, SPRING_SALE, WABA, WELCOME
from tests.conftest import ApiClient
from tests.dashboard.conftest import login
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator
from tests.webhook_payloads import dumps, sign


@pytest.fixture
def waba_cloud(cloud: Connection) -> Connection:
    cloud.credentials = {**cloud.credentials, "waba_id": WABA}
    cloud.save(update_fields=["credentials"])
    return cloud


@pytest.fixture
def synced(sim: ProviderSimulator, waba_cloud: Connection) -> dict[str, MessageTemplate]:
    """order_update (positional, text header, URL button), spring_sale (named, image header),
    welcome (no parameters) and paused_one (PAUSED), synced from the simulator."""
    sim.add_template(WABA, "order_update", components=ORDER_UPDATE, category="UTILITY")
    sim.add_template(WABA, "spring_sale", components=SPRING_SALE, parameter_format="NAMED")
    sim.add_template(WABA, "welcome", components=WELCOME)
    sim.add_template(WABA, "paused_one", components=WELCOME, status="PAUSED")
    services.templates_sync(connection=waba_cloud)
    return {t.name: t for t in MessageTemplate.objects.filter(connection=waba_cloud)}


def _asset(tenant: Any, file_type: str = "image", name: str = "sale.png") -> Asset:
    mime = {"image": "image/png", "video": "video/mp4", "document": "application/pdf"}[file_type]
    return Asset.objects.create(
        tenant=tenant,
        original_name=name,
        key=f"tenants/{tenant.pk}/media/{name}",
        file_type=file_type,
        mime_type=mime,
        size=68,
        sha256="0" * 64,
        status=Asset.Status.READY,
    )


ORDER_PARAMS = {"header.1": "{{order}}", "1": "{{name}}", "2": "{{order}}", "button.0": "{{order}}"}


def _run(campaign: Campaign) -> Campaign:
    """Start CAMPAIGN, take its snapshot and send everything, as the workers would."""
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    for _ in range(5):
        campaign.refresh_from_db()
        if campaign.status != Campaign.Status.RUNNING:
            break
        sending.dispatch(campaign.pk, slice_seconds=5)
    campaign.refresh_from_db()
    return campaign


# --- Composing ----------------------------------------------------------------------------------


def test_the_api_creates_a_template_campaign_without_a_message(
    api_alice: ApiClient, waba_cloud: Connection, synced: dict[str, MessageTemplate]
) -> None:
    payload = {
        "name": "Orders",
        "connection_id": str(waba_cloud.pk),
        "template_id": synced["order_update"].pk,
        "template_params": ORDER_PARAMS,
    }
    response = api_alice.post_json("/api/campaigns/", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["template_id"] == synced["order_update"].pk and body["template_params"] == ORDER_PARAMS
    assert body["message"] == "" and body["header_media_id"] is None


def test_a_campaign_without_template_still_needs_a_message(api_alice: ApiClient, waba_cloud: Connection) -> None:
    response = api_alice.post_json("/api/campaigns/", {"name": "x", "connection_id": str(waba_cloud.pk)})
    assert response.status_code == 422 and response.json()["code"] == "invalid_message"


@pytest.mark.parametrize(
    ("template", "params", "header", "code"),
    [
        ("paused_one", {}, None, "template_not_approved"),
        ("order_update", {**ORDER_PARAMS, "button.0": " "}, None, "template_param_unmapped"),
        ("order_update", {k: v for k, v in ORDER_PARAMS.items() if k != "2"}, None, "template_param_unmapped"),
        ("order_update", {**ORDER_PARAMS, "3": "x"}, None, "template_param_unknown"),
        ("spring_sale", {"first_name": "{{name}}", "discount": "20%"}, None, "header_media_missing"),
        ("spring_sale", {"first_name": "{{name}}", "discount": "20%"}, "video", "header_media_wrong_kind"),
        ("welcome", {}, "image", "header_media_unexpected"),
    ],
)
def test_composing_refuses_a_template_that_cannot_be_sent(
    api_alice: ApiClient,
    acme: Any,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    template: str,
    params: dict[str, str],
    header: str | None,
    code: str,
) -> None:
    payload: dict[str, Any] = {
        "name": "x",
        "connection_id": str(waba_cloud.pk),
        "template_id": synced[template].pk,
        "template_params": params,
    }
    if header:
        payload["header_media_id"] = str(_asset(acme, header, f"h.{header}").pk)
    response = api_alice.post_json("/api/campaigns/", payload)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not Campaign.objects.exists()


def test_a_template_of_another_connection_or_tenant_is_refused(
    api_alice: ApiClient,
    api_charlie: ApiClient,
    acme: Any,
    globex: Any,
    sim: ProviderSimulator,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
) -> None:
    other = Connection.objects.create(
        tenant=acme,
        name="second number",
        provider="cloud",
        base_url=sim.base_url,
        credentials={"phone_number_id": "2", "access_token": "t", "app_secret": "s", "verify_token": "v"},
    )
    payload = {"name": "x", "connection_id": str(other.pk), "template_id": synced["welcome"].pk}
    response = api_alice.post_json("/api/campaigns/", payload)
    assert response.status_code == 400 and response.json()["code"] == "template_wrong_connection"

    globex_connection = Connection.objects.create(
        tenant=globex,
        name="g",
        provider="cloud",
        base_url=sim.base_url,
        credentials={"phone_number_id": "3", "access_token": "t", "app_secret": "s", "verify_token": "v"},
    )
    payload = {"name": "x", "connection_id": str(globex_connection.pk), "template_id": synced["welcome"].pk}
    response = api_charlie.post_json("/api/campaigns/", payload)
    assert response.status_code == 400 and response.json()["code"] == "template_not_found"


def test_start_refuses_a_template_that_stopped_being_approved(
    api_alice: ApiClient, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    campaign = make_campaign(waba_cloud, message="", template=synced["welcome"])
    synced["welcome"].apply_change(status="PAUSED", reason="Low quality")
    response = api_alice.post_json(f"/api/campaigns/{campaign.pk}/start/")
    assert response.status_code == 400
    assert response.json()["code"] == "template_not_approved"
    assert "Low quality" in response.json()["error"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_editing_checks_the_template_too(
    api_alice: ApiClient, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    campaign = make_campaign(waba_cloud)
    response = api_alice.patch_json(
        f"/api/campaigns/{campaign.pk}/", {"template_id": synced["order_update"].pk, "template_params": {"1": "x"}}
    )
    assert response.status_code == 400 and response.json()["code"] == "template_param_unmapped"
    response = api_alice.patch_json(
        f"/api/campaigns/{campaign.pk}/",
        {"template_id": synced["order_update"].pk, "template_params": ORDER_PARAMS, "message": ""},
    )
    assert response.status_code == 200, response.content
    campaign.refresh_from_db()
    assert campaign.template_id == synced["order_update"].pk and campaign.message == ""

    # Back to free text: the template's parameters go with it; a message is needed again.
    response = api_alice.patch_json(f"/api/campaigns/{campaign.pk}/", {"template_id": None})
    assert response.status_code == 422 and response.json()["code"] == "invalid_message"
    response = api_alice.patch_json(f"/api/campaigns/{campaign.pk}/", {"template_id": None, "message": "Hi"})
    assert response.status_code == 200, response.content
    assert response.json()["template_id"] is None and response.json()["template_params"] == {}


# --- Sending --------------------------------------------------------------------------------------


def test_a_positional_template_goes_out_with_header_body_and_button_parameters(
    sim: ProviderSimulator, acme: Any, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana", attributes={"order": "A-17"})
    Contact.objects.create(tenant=acme, phone="+5511988880002", name="Bia", attributes={"order": 42})
    Contact.objects.create(tenant=acme, phone="+5511988880003", name="Caio", attributes={"order": 4.5})
    campaign = make_campaign(waba_cloud, message="", template=synced["order_update"], template_params=ORDER_PARAMS)

    campaign = _run(campaign)

    assert campaign.status == Campaign.Status.FINISHED, campaign.pause_reason
    assert campaign.stat_sent == 3 and len(sim.sends) == 3
    by_number = {r["number"]: r for r in sim.sends}
    ana = by_number["5511988880001"]
    assert ana["text"] == "Hi Ana, your order A-17 ships today."
    spec = ana["template"]
    assert spec["name"] == "order_update" and spec["language"]["code"] == "en_US"
    assert spec["components"] == [
        {"type": "header", "parameters": [{"type": "text", "text": "A-17"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A-17"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A-17"}]},
    ]
    texts = dict(Delivery.objects.filter(campaign=campaign).values_list("phone", "text"))
    assert texts == {
        "+5511988880001": "Hi Ana, your order A-17 ships today.",
        "+5511988880002": "Hi Bia, your order 42 ships today.",
        "+5511988880003": "Hi Caio, your order 4.5 ships today.",  # a float: rendered in Python
    }
    assert by_number["5511988880003"]["text"] == "Hi Caio, your order 4.5 ships today."


def test_a_test_send_of_a_template_campaign_sends_the_template_rendered_for_the_contact(
    sim: ProviderSimulator,
    acme: Any,
    api_alice: ApiClient,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    make_campaign: Any,
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana", attributes={"order": "A-17"})
    campaign = make_campaign(waba_cloud, message="", template=synced["order_update"], template_params=ORDER_PARAMS)

    response = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": ana.phone, "contact_id": ana.pk})

    assert response.status_code == 200, response.content
    assert len(sim.sends) == 1 and sim.sends[0]["text"] == "Hi Ana, your order A-17 ships today."
    assert sim.sends[0]["template"]["name"] == "order_update"
    assert sim.sends[0]["template"]["components"][1]["parameters"][0] == {"type": "text", "text": "Ana"}
    assert not Delivery.objects.filter(campaign=campaign).exists()
    MessageTemplate.objects.filter(pk=synced["order_update"].pk).update(status="PAUSED")
    refused = api_alice.post_json(f"/api/campaigns/{campaign.id}/test/", {"phone": ana.phone})
    assert refused.status_code == 409 and refused.json()["code"] == "template_not_approved"
    assert len(sim.sends) == 1


def test_a_named_template_with_an_image_header_goes_out_with_parameter_names(
    sim: ProviderSimulator, acme: Any, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana")
    image = _asset(acme)
    campaign = make_campaign(
        waba_cloud,
        message="",
        template=synced["spring_sale"],
        template_params={"first_name": "{{name}}", "discount": "20%"},
        header_media=image,
    )

    campaign = _run(campaign)

    assert campaign.status == Campaign.Status.FINISHED, campaign.pause_reason
    [record] = sim.sends
    assert record["text"] == "Hello Ana! 20% off everything this week."
    header, body = record["template"]["components"]
    assert header["parameters"][0]["type"] == "image" and "sale.png" in header["parameters"][0]["image"]["link"]
    assert body["parameters"] == [
        {"type": "text", "text": "Ana", "parameter_name": "first_name"},
        {"type": "text", "text": "20%", "parameter_name": "discount"},
    ]
    assert record["media"]["type"] == "image"


def test_a_template_without_parameters_sends_no_components(
    sim: ProviderSimulator, acme: Any, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana")
    campaign = _run(make_campaign(waba_cloud, message="", template=synced["welcome"]))
    assert campaign.stat_sent == 1
    assert "components" not in sim.sends[0]["template"]
    assert Delivery.objects.get(campaign=campaign).text == "Welcome to Sense Shop!"


def test_metas_refusal_of_a_template_send_fails_the_delivery_with_its_code(
    sim: ProviderSimulator, acme: Any, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    """Meta changed the template under Sense (one more body parameter): 132000."""
    Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana")
    campaign = make_campaign(waba_cloud, message="", template=synced["welcome"], template_params={})
    changed = [{"type": "BODY", "text": "Welcome {{1}}!"}]
    sim.add_template(WABA, "welcome", components=changed)
    campaign = _run(campaign)
    delivery = Delivery.objects.get(campaign=campaign)
    assert delivery.status == Delivery.Status.FAILED and delivery.error_code == "132000"


def test_the_simulator_validates_template_sends_like_meta(sim: ProviderSimulator, waba_cloud: Connection) -> None:
    from campaigns.providers import (
        Media,
        OutgoingMessage,
        ProviderError,
        TemplateMessage,
        TemplateParameter,
        provider_for,
    )

    sim.add_template(WABA, "spring_sale", components=SPRING_SALE, parameter_format="NAMED")
    provider = provider_for(waba_cloud)

    def send(template: TemplateMessage) -> str:
        try:
            provider.send(OutgoingMessage(phone="+5511988880001", text="", template=template))
        except ProviderError as exc:
            return exc.code
        return "ok"

    named = (TemplateParameter("Ana", "first_name"), TemplateParameter("5%", "discount"))
    assert send(TemplateMessage("nope", "en_US")) == "132001"
    assert send(TemplateMessage("spring_sale", "pt_BR")) == "132001"
    assert send(TemplateMessage("spring_sale", "en_US", body_parameters=named)) == "132012"  # no image
    image = Media(url="https://cdn.example/x.png", file_type="image", mime_type="image/png", file_name="x.png")
    assert send(TemplateMessage("spring_sale", "en_US", header_media=image, body_parameters=named[:1])) == "132000"
    positional = (TemplateParameter("Ana"), TemplateParameter("5%"))
    assert send(TemplateMessage("spring_sale", "en_US", header_media=image, body_parameters=positional)) == "132000"
    assert send(TemplateMessage("spring_sale", "en_US", header_media=image, body_parameters=named)) == "ok"


def test_a_cloud_campaign_reaches_contacts_who_never_wrote_only_with_a_template(
    dramatiq_worker: Any,
    sim: ProviderSimulator,
    acme: Any,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    """End to end on a worker: free text to contacts outside their 24-hour window fails with
    131047; the approved template reaches every one of them."""
    sim.service_window = set()  # nobody wrote in
    make_contacts(6)
    free_text = make_campaign(waba_cloud, name="Free text", message="Hi {{name}}")
    services.campaign_start(campaign=free_text)
    wait_for(lambda: _done(free_text), timeout=30, what="free-text campaign over")
    assert set(Delivery.objects.filter(campaign=free_text).values_list("error_code", flat=True)) == {"131047"}

    campaign = make_campaign(
        waba_cloud,
        name="Template",
        message="",
        template=synced["spring_sale"],
        template_params={"first_name": "{{name}}", "discount": "30%"},
        header_media=_asset(acme),
    )
    services.campaign_start(campaign=campaign)
    wait_for(lambda: _done(campaign), timeout=30, what="template campaign finished")
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FINISHED and campaign.stat_sent == 6 and campaign.stat_failed == 0
    template_sends = [r for r in sim.sends if r.get("template")]
    assert len(template_sends) == 6 and max(sim.count_by_number().values()) == 1
    assert {r["text"] for r in template_sends} == {
        f"Hello Contact {i}! 30% off everything this week." for i in range(6)
    }


def _done(campaign: Campaign) -> bool:
    campaign.refresh_from_db()
    return campaign.status in (Campaign.Status.FINISHED, Campaign.Status.PAUSED)


# --- A template paused mid-campaign ------------------------------------------------------------


def test_a_template_paused_by_meta_pauses_its_running_campaign(
    alice: Any,
    sim: ProviderSimulator,
    acme: Any,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    make_contacts(4)
    template = synced["welcome"]
    campaign = make_campaign(waba_cloud, message="", template=template)
    other = make_campaign(waba_cloud, name="Other", message="Hi")
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    services.campaign_start(campaign=other)
    services.campaign_prepare(campaign_id=other.pk)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING

    remote = next(t for t in sim.templates[WABA] if t["name"] == "welcome")
    body = dumps(sim.template_status(WABA, remote, "PAUSED", "Low engagement"))
    response = Client().post(
        f"/api/webhooks/whatsapp/{waba_cloud.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign("app-secret", body)},
    )
    assert response.status_code == 200 and response.json()["status"] == "pending"
    tracking.process_all_pending()

    template.refresh_from_db()
    assert template.status == "PAUSED" and template.status_reason == "Low engagement"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert "welcome" in campaign.pause_reason and "Low engagement" in campaign.pause_reason
    activity = CampaignActivity.objects.get(campaign=campaign, kind="template")
    assert "paused" in activity.message and activity.data["status"] == "PAUSED"
    other.refresh_from_db()
    assert other.status == Campaign.Status.RUNNING  # another template (none) is untouched
    page = login("alice").get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Low engagement" in page and "welcome" in page
    assert '<span class="badge template-paused">Paused</span>' in page  # the template's status label
    assert sending.dispatch(campaign.pk).sent == 0 and not [r for r in sim.sends if r.get("template")]
    with pytest.raises(ServiceError) as raised:
        services.campaign_resume(campaign=campaign)
    assert raised.value.code == "template_not_approved"

    # Approved again: it resumes and sends.
    body = dumps(sim.template_status(WABA, remote, "APPROVED"))
    Client().post(
        f"/api/webhooks/whatsapp/{waba_cloud.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign("app-secret", body)},
    )
    tracking.process_all_pending()
    services.campaign_resume(campaign=campaign)
    sending.dispatch(campaign.pk, slice_seconds=5)
    assert len([r for r in sim.sends if r.get("template")]) == 4


def test_a_quality_update_is_kept_on_the_template(
    sim: ProviderSimulator, waba_cloud: Connection, synced: dict[str, MessageTemplate]
) -> None:
    remote = next(t for t in sim.templates[WABA] if t["name"] == "welcome")
    body = dumps(sim.template_quality(WABA, remote, "RED"))
    Client().post(
        f"/api/webhooks/whatsapp/{waba_cloud.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign("app-secret", body)},
    )
    tracking.process_all_pending()
    template = MessageTemplate.objects.get(pk=synced["welcome"].pk)
    assert template.quality_score == "RED" and template.status == "APPROVED"


def test_a_sync_that_finds_the_template_disabled_pauses_its_campaign(
    sim: ProviderSimulator,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    make_contacts(2)
    campaign = make_campaign(waba_cloud, message="", template=synced["welcome"])
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    sim.add_template(WABA, "welcome", components=WELCOME, status="DISABLED")
    services.templates_sync(connection=waba_cloud)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED and "disabled" in campaign.pause_reason


def test_erasing_a_contact_removes_its_template_parameters(
    sim: ProviderSimulator, acme: Any, waba_cloud: Connection, synced: dict[str, MessageTemplate], make_campaign: Any
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511988880001", name="Ana", attributes={"order": "A-17"})
    campaign = _run(
        make_campaign(waba_cloud, message="", template=synced["order_update"], template_params=ORDER_PARAMS)
    )
    delivery = Delivery.objects.get(campaign=campaign)
    assert delivery.template_values == {"header.1": "A-17", "1": "Ana", "2": "A-17", "button.0": "A-17"}

    services.contact_erase(contact=ana)

    delivery.refresh_from_db()
    assert delivery.template_values is None and delivery.text == "" and delivery.phone != ana.phone


def test_a_scheduled_campaign_whose_template_was_paused_goes_back_to_draft(
    waba_cloud: Connection, synced: dict[str, MessageTemplate], make_contacts: Any, make_campaign: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    make_contacts(2)
    campaign = make_campaign(
        waba_cloud, message="", template=synced["welcome"], scheduled_at=timezone.now() + timedelta(hours=1)
    )
    services.campaign_start(campaign=campaign)
    assert campaign.status == Campaign.Status.SCHEDULED
    synced["welcome"].apply_change(status="PAUSED")

    assert services.campaigns_start_due(now=timezone.now() + timedelta(hours=2)) == []

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    activity = CampaignActivity.objects.get(campaign=campaign, kind="template")
    assert activity.message.startswith("Not started:") and "paused" in activity.message


def test_the_sender_pauses_a_campaign_whose_template_stopped_being_approved(
    sim: ProviderSimulator,
    waba_cloud: Connection,
    synced: dict[str, MessageTemplate],
    make_contacts: Any,
    make_campaign: Any,
) -> None:
    """A status change that paused nothing (it raced the start) still stops the sends."""
    make_contacts(2)
    campaign = make_campaign(waba_cloud, message="", template=synced["welcome"])
    services.campaign_start(campaign=campaign)
    services.campaign_prepare(campaign_id=campaign.pk)
    MessageTemplate.objects.filter(pk=synced["welcome"].pk).update(status="DISABLED")

    assert sending.dispatch(campaign.pk).sent == 0

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED and "disabled" in campaign.pause_reason
    assert CampaignActivity.objects.filter(campaign=campaign, kind="template").exists()
    assert not sim.sends
