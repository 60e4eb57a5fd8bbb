"""Meta's error codes: what the sender and the status webhooks do with each, what the pages
and the API show of them. The sender runs in this process (`sending.dispatch`) against the
simulator over real HTTP; webhooks go through the real view and `tracking`."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone, translation

from campaigns import sending, services, tracking
from campaigns.models import (
    Campaign,
    CampaignActivity,
    Connection,
    ConsentEvent,
    Contact,
    Delivery,
    MessageTemplate,
    WebhookEvent,
)
from campaigns.providers import error_info
from tests.helpers import wait_for
from tests.simulator import ProviderSimulator, cloud_error_item, cloud_pricing
from tests.webhook_payloads import sign


def running(connection: Connection, contacts: list[Contact], **fields: Any) -> Campaign:
    """A running campaign on CONNECTION with one pending delivery per contact (in order)."""
    now = timezone.now()
    campaign = Campaign.objects.create(
        tenant=connection.tenant,
        connection=connection,
        name=fields.pop("name", "Black Friday"),
        message="Hi",
        status=Campaign.Status.RUNNING,
        started_at=now,
        prepared_at=now,
        **fields,
    )
    Delivery.objects.bulk_create(
        [Delivery(tenant=connection.tenant, campaign=campaign, contact=c, phone=c.phone, text="Hi") for c in contacts]
    )
    n = len(contacts)
    Campaign.objects.filter(pk=campaign.pk).update(stat_total=n, stat_pending=n, audience_count=n)
    campaign.refresh_from_db()
    return campaign


def run(campaign: Campaign, *, rounds: int = 40) -> Campaign:
    """Dispatch CAMPAIGN until it stops running (as the re-enqueued actor would)."""
    for _ in range(rounds):
        outcome = sending.dispatch(campaign.pk, slice_seconds=5)
        campaign.refresh_from_db()
        if campaign.status != Campaign.Status.RUNNING:
            break
        time.sleep(min(outcome.reschedule_in or 0.0, 0.3))
    return campaign


def template_for(
    sim: ProviderSimulator, connection: Connection, name: str = "spring_sale", category: str = "MARKETING"
) -> MessageTemplate:
    """An approved template with a bare body, known to Sense and to the simulated Graph API."""
    remote = sim.add_template("waba-1", name, "pt_BR", category=category)
    return MessageTemplate.objects.create(
        components=remote["components"],
        tenant=connection.tenant,
        connection=connection,
        meta_id="1234",
        name=name,
        language="pt_BR",
        status="APPROVED",
        category=category,
    )


def post_cloud(connection: Connection, statuses: list[dict[str, Any]]) -> None:
    """POST a signed Cloud notification carrying STATUSES (items of simulator status bodies)."""
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {"statuses": statuses}}]}],
        }
    ).encode()
    response = Client().post(
        f"/api/webhooks/whatsapp/{connection.webhook_token}/",
        body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(connection.credential("app_secret"), body)},
    )
    assert response.status_code == 200, response.content


def status_item(message_id: str, status: str, **extra: Any) -> dict[str, Any]:
    record = {"message_id": message_id, "number": "5511900000000"}
    body = ProviderSimulator.cloud_status(record, status, **extra)
    return dict(body["entry"][0]["changes"][0]["value"]["statuses"][0])


# --- The table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("131050", "opt_out"),
        ("131049", "wait"),
        ("131047", "never_free_text"),
        ("131026", "never"),
        ("130429", "throttle"),
        ("131056", "throttle"),
        ("80007", "throttle"),
        ("132000", "template"),
        ("132009", "template"),
        ("132016", "template"),
        ("131051", "fail"),
        ("131052", "fail"),
        ("131053", "fail"),
    ],
)
def test_each_cloud_code_has_a_title_guidance_and_action(code: str, action: str) -> None:
    info = error_info("cloud", code)
    assert info is not None and info.action == action
    assert info.title and str(info.guidance)


def test_the_guidance_of_131047_says_to_use_a_template() -> None:
    info = error_info("cloud", "131047")
    assert info is not None
    with translation.override("en"):  # lazy: an earlier request may have left pt-BR active
        assert str(info.guidance) == "Outside the 24-hour window: use a template."
    with translation.override("pt-br"):
        assert str(info.guidance) == "Fora da janela de 24 horas: use um modelo."


def test_sandbox_connections_explain_the_cloud_codes_they_send() -> None:
    info = error_info("sandbox", "131049")
    assert info is not None and info.action == "wait"


def test_unknown_codes_and_other_providers_are_unexplained() -> None:
    assert error_info("cloud", "999999") is None
    assert error_info("cloud", "connect") is None
    assert error_info("evolution", "131050") is None


def test_evolution_explains_its_number_not_on_whatsapp_as_never_retried() -> None:
    info = error_info("evolution", "not_on_whatsapp")
    assert info is not None and info.action == "never" and info.title == "Number not on WhatsApp"
    assert "not_on_whatsapp" in Delivery.ERROR_ACTIONS["never"]
    assert error_info("evolution", "400") is None


# --- What the sender does ----------------------------------------------------------------------


def test_a_sync_error_keeps_the_numeric_code_title_and_details(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(2)
    sim.fail_number_cloud(contacts[0].phone, 131047)
    campaign = run(running(cloud, contacts))

    failed = Delivery.objects.get(campaign=campaign, status=Delivery.Status.FAILED)
    assert failed.error_code == "131047"
    assert "Re-engagement message" in failed.error_message
    assert "more than 24 hours have passed" in failed.error_message
    assert failed.failed_at is not None
    assert campaign.status == Campaign.Status.FINISHED and campaign.stat_failed == 1


def test_131050_opts_the_contact_out_with_a_consent_event(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(3)
    stopped = contacts[1]
    sim.fail_number_cloud(stopped.phone, 131050)
    later = running(cloud, [stopped], name="Next week")
    Campaign.objects.filter(pk=later.pk).update(status=Campaign.Status.PAUSED)

    campaign = run(running(cloud, contacts))

    failed = Delivery.objects.get(campaign=campaign, status=Delivery.Status.FAILED)
    assert (failed.contact_id, failed.error_code) == (stopped.pk, "131050")
    assert failed.retryable_at() is None  # never sent again
    stopped.refresh_from_db()
    assert stopped.opted_out and stopped.opt_out_source == "provider"
    event = ConsentEvent.objects.get(contact=stopped)
    assert event.opted_out and event.source == ConsentEvent.Source.PROVIDER
    # Its pending delivery in another campaign is cancelled, counters exact.
    assert Delivery.objects.get(campaign=later).status == Delivery.Status.CANCELLED
    later.refresh_from_db()
    assert (later.stat_pending, later.stat_cancelled) == (0, 1)
    assert campaign.stat_sent == 2


def test_131049_is_retryable_after_24_hours_and_131026_never(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(3)
    sim.fail_number_cloud(contacts[0].phone, 131049)
    sim.fail_number_cloud(contacts[1].phone, 131026)
    sim.fail_number_cloud(contacts[2].phone, 131051)
    campaign = run(running(cloud, contacts))

    capped = Delivery.objects.get(campaign=campaign, error_code="131049")
    undeliverable = Delivery.objects.get(campaign=campaign, error_code="131026")
    unsupported = Delivery.objects.get(campaign=campaign, error_code="131051")
    assert capped.status == Delivery.Status.FAILED and capped.attempts == 1
    assert len([r for r in sim.requests if r["number"] == contacts[0].phone.lstrip("+")]) == 1
    assert capped.failed_at is not None
    assert capped.retryable_at() == capped.failed_at + timedelta(hours=24)
    # Undeliverable: the same message fails the same way (it was "retryable" at once before
    # the retry rule became one; the retry never requeued it).
    assert undeliverable.retryable_at() is None and undeliverable.not_retryable_reason()
    assert unsupported.retryable_at() == unsupported.failed_at

    deliveries = Delivery.objects.filter(campaign=campaign)
    assert set(deliveries.retryable(timezone.now())) == {unsupported}
    tomorrow = timezone.now() + timedelta(hours=24, minutes=1)
    assert set(deliveries.retryable(tomorrow)) == {capped, unsupported}


@pytest.mark.parametrize("code", [130429, 131056, 80007])
def test_throttling_codes_are_retried_within_the_campaign_and_finally_sent(
    settings: Any, sim: ProviderSimulator, cloud: Connection, make_contacts: Any, code: int
) -> None:
    settings.CAMPAIGN_MAX_CONSECUTIVE_ERRORS = 1  # a counted error would pause it at once
    contacts = make_contacts(3)
    sim.fail_next_cloud(code, count=2, retry_after=0.05)
    campaign = run(running(cloud, contacts))

    assert campaign.status == Campaign.Status.FINISHED, campaign.pause_reason
    assert (campaign.stat_sent, campaign.stat_failed) == (3, 0)
    assert sorted(sim.count_by_number().values()) == [1, 1, 1]
    assert len([r for r in sim.requests if r["status"] == 400]) == 2
    retried = Delivery.objects.get(campaign=campaign, attempts=3)
    assert retried.status == Delivery.Status.SENT and retried.error_code == ""


def test_five_template_errors_in_a_row_pause_the_campaign_with_the_templates_name(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(8)
    sim.fail_next_cloud(132000, count=5)
    campaign = run(running(cloud, contacts, template=template_for(sim, cloud, "spring_sale")))

    assert campaign.status == Campaign.Status.PAUSED
    assert "5 template errors in a row" in campaign.pause_reason
    assert '"spring_sale"' in campaign.pause_reason and "132000" in campaign.pause_reason
    assert (campaign.stat_failed, campaign.stat_pending, campaign.stat_sent) == (5, 3, 0)
    activity = CampaignActivity.objects.get(campaign=campaign, kind=CampaignActivity.Kind.PAUSED)
    assert "spring_sale" in activity.message and activity.data["code"] == "132000"

    Campaign.objects.get(pk=campaign.pk).resume()
    campaign = run(campaign)
    assert campaign.status == Campaign.Status.FINISHED and campaign.stat_sent == 3


def test_a_success_in_between_resets_the_run_of_template_errors(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(9)
    for contact in contacts[:4] + contacts[5:]:
        sim.fail_number_cloud(contact.phone, 132012)
    campaign = run(running(cloud, contacts, template=template_for(sim, cloud)))

    assert campaign.status == Campaign.Status.FINISHED
    assert (campaign.stat_failed, campaign.stat_sent) == (8, 1)
    assert not CampaignActivity.objects.filter(campaign=campaign, kind=CampaignActivity.Kind.PAUSED).exists()


def test_another_error_in_between_ends_the_run_of_template_errors(
    sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(9)
    for i, contact in enumerate(contacts):
        sim.fail_number_cloud(contact.phone, 131026 if i == 4 else 132000)
    campaign = run(running(cloud, contacts, template=template_for(sim, cloud)))

    assert campaign.status == Campaign.Status.FINISHED and campaign.stat_failed == 9


# --- What status webhooks do -------------------------------------------------------------------


def sent_delivery(connection: Connection, contact: Contact, message_id: str) -> Delivery:
    campaign = running(connection, [contact])
    delivery = Delivery.objects.get(campaign=campaign)
    Delivery.move(
        delivery.pk,
        from_status=Delivery.Status.PENDING,
        to_status=Delivery.Status.SENT,
        provider_message_id=message_id,
        sent_at=timezone.now(),
    )
    return Delivery.objects.get(pk=delivery.pk)


def test_a_failed_status_webhook_keeps_the_code_title_and_details(
    cloud: Connection, make_contacts: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [contact] = make_contacts(1)
    delivery = sent_delivery(cloud, contact, "wamid.A")
    post_cloud(cloud, [status_item("wamid.A", "failed", errors=[cloud_error_item(131049)])])
    with django_capture_on_commit_callbacks(execute=True):
        tracking.process_pending()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_code) == (Delivery.Status.FAILED, "131049")
    assert "healthy ecosystem engagement" in delivery.error_message
    assert "failed to be delivered" in delivery.error_message  # error_data.details
    assert delivery.failed_at is not None
    assert delivery.retryable_at() == delivery.failed_at + timedelta(hours=24)
    contact.refresh_from_db()
    assert not contact.opted_out


def test_131050_in_a_failed_status_webhook_opts_the_contact_out(
    cloud: Connection, make_contacts: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [contact] = make_contacts(1)
    sent_delivery(cloud, contact, "wamid.B")
    post_cloud(cloud, [status_item("wamid.B", "failed", errors=[cloud_error_item(131050)])])
    with django_capture_on_commit_callbacks(execute=True):
        tracking.process_pending()

    contact.refresh_from_db()
    assert contact.opted_out and contact.opt_out_source == "provider"
    assert ConsentEvent.objects.filter(contact=contact, source="provider", opted_out=True).count() == 1


def test_131050_in_an_early_failed_status_opts_the_contact_out_once_the_id_is_known(
    cloud: Connection, make_contacts: Any, django_capture_on_commit_callbacks: Any
) -> None:
    [contact] = make_contacts(1)
    post_cloud(cloud, [status_item("wamid.C", "failed", errors=[cloud_error_item(131050)])])
    tracking.process_pending()  # no delivery has that id yet: kept as an early event
    delivery = sent_delivery(cloud, contact, "wamid.C")

    with django_capture_on_commit_callbacks(execute=True):
        assert tracking.apply_early_events(delivery.pk) == 1

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error_code) == (Delivery.Status.FAILED, "131050")
    contact.refresh_from_db()
    assert contact.opted_out and contact.opt_out_source == "provider"


def test_pricing_from_status_webhooks_is_kept_on_the_delivery_in_one_batch(
    cloud: Connection, make_contacts: Any
) -> None:
    contacts = make_contacts(3)
    deliveries = [sent_delivery(cloud, c, f"wamid.P{i}") for i, c in enumerate(contacts)]
    post_cloud(cloud, [status_item("wamid.P0", "sent", pricing=cloud_pricing("marketing"))])
    post_cloud(cloud, [status_item("wamid.P0", "delivered", pricing=cloud_pricing("marketing"))])
    post_cloud(cloud, [status_item("wamid.P1", "delivered", pricing=cloud_pricing("utility", billable=False))])
    post_cloud(
        cloud,
        [
            status_item(
                "wamid.P2",
                "sent",
                conversation={"id": "conv-1", "origin": {"type": "authentication"}},
                pricing={"billable": True, "pricing_model": "CBP", "category": "authentication"},
            )
        ],
    )

    assert tracking.process_pending() == 4

    got = {d.pk: d for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])}
    assert (got[deliveries[0].pk].billable, got[deliveries[0].pk].pricing_category) == (True, "marketing")
    assert got[deliveries[0].pk].status == Delivery.Status.DELIVERED
    assert (got[deliveries[1].pk].billable, got[deliveries[1].pk].pricing_category) == (False, "utility")
    assert (got[deliveries[2].pk].billable, got[deliveries[2].pk].pricing_category) == (True, "authentication")
    assert not WebhookEvent.objects.filter(status="pending").exists()


def test_pricing_of_an_early_status_is_applied_when_the_send_records_the_id(
    cloud: Connection, make_contacts: Any
) -> None:
    [contact] = make_contacts(1)
    post_cloud(cloud, [status_item("wamid.E", "sent", pricing=cloud_pricing("marketing"))])
    tracking.process_pending()
    delivery = sent_delivery(cloud, contact, "wamid.E")

    assert tracking.apply_early_events(delivery.pk) == 1
    delivery.refresh_from_db()
    assert (delivery.billable, delivery.pricing_category) == (True, "marketing")


def test_the_parser_reads_pricing_and_conversation() -> None:
    from campaigns.providers.cloud import parse_notification

    item = status_item(
        "wamid.X",
        "sent",
        pricing=cloud_pricing("marketing"),
        conversation={"id": "c1", "origin": {"type": "marketing"}},
    )
    parsed = parse_notification(
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": [item]}}]}]}
    )
    [update] = parsed.statuses
    assert (update.billable, update.pricing_category, update.pricing_model, update.pricing_type) == (
        True,
        "marketing",
        "PMP",
        "regular",
    )
    assert (update.conversation_id, update.conversation_origin) == ("c1", "marketing")


# --- End to end ----------------------------------------------------------------------------------


def test_end_to_end_failed_status_webhooks_and_pricing_reach_the_deliveries(
    dramatiq_worker: Any, live_server: Any, sim: ProviderSimulator, cloud: Connection, make_contacts: Any
) -> None:
    """The simulator answers each send, then posts its status webhook to the live server as
    Meta would: 131050 and 131049 failures for two contacts, delivered with pricing for the
    others; a real worker sends and applies them."""
    contacts = make_contacts(5)
    stopped, capped = (c.phone.lstrip("+") for c in contacts[:2])
    url = f"{live_server.url}/api/webhooks/whatsapp/{cloud.webhook_token}/"

    def hook(record: dict[str, Any]) -> None:
        if record["number"] in (stopped, capped):
            code = 131050 if record["number"] == stopped else 131049
            body = sim.cloud_status(record, "failed", errors=[cloud_error_item(code)])
        else:
            body = sim.cloud_status(record, "delivered", pricing=cloud_pricing("marketing"))
        assert sim.post_webhook(url, body, app_secret=cloud.credential("app_secret")) == 200

    sim.webhook_hook = hook
    campaign = Campaign.objects.create(tenant=cloud.tenant, connection=cloud, name="E2E", message="Hi")
    services.campaign_start(campaign=campaign)

    def settled() -> bool:
        campaign.refresh_from_db()
        return campaign.stat_failed == 2 and campaign.stat_delivered == 3

    wait_for(settled, timeout=30, what="statuses applied")
    wait_for(lambda: Contact.objects.get(pk=contacts[0].pk).opted_out, timeout=10, what="opt-out")
    assert not sim.hook_errors
    by_code = dict(Delivery.objects.filter(campaign=campaign, status="failed").values_list("error_code", "contact_id"))
    assert by_code == {"131050": contacts[0].pk, "131049": contacts[1].pk}
    billable = Delivery.objects.filter(campaign=campaign, billable=True, pricing_category="marketing")
    assert billable.count() == 3
    assert ConsentEvent.objects.filter(contact=contacts[0], source="provider").exists()
