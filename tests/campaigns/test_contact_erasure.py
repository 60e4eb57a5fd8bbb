"""Erasing a contact (LGPD) through the API, the contacts page and the admin: no personal data
is left, deliveries stay as anonymous rows, counters stay exact, an audit record remains."""

from __future__ import annotations

import json
import logging
import re
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core import serializers
from django.core.management import call_command
from django.test import Client

from campaigns import retention, services
from campaigns.models import Campaign, Connection, Contact, ContactErasure, Delivery, DeliveryEvent, WebhookEvent
from campaigns.services import campaign_recalc_stats
from sense.models import Tenant
from tests.conftest import PASSWORD, ApiClient
from tests.tracking.conftest import make_connection
from tests.webhook_payloads import evolution_incoming_message, evolution_update

PHONE = "+5511999990000"
DIGITS = "5511999990000"
OLD_FORM = "551199990000"  # the WhatsApp id of a number registered before the ninth digit
NAME = "Maria Souza"
CPF = "123.456.789-00"
PERSONAL = [DIGITS, OLD_FORM, NAME, CPF, "Rua das Flores", "lgpd-vip"]


def body_with(number: str, message_id: str = "wamid.other", status: str = "DELIVERY_ACK") -> str:
    payload = evolution_update(message_id, status)
    payload["data"]["remoteJid"] = f"{number}@s.whatsapp.net"
    payload["data"]["participant"] = f"{number}@s.whatsapp.net"
    return json.dumps(payload)


def store(connection: Connection, body: str, status: str) -> WebhookEvent:
    return WebhookEvent.objects.create(
        tenant=connection.tenant,
        connection=connection,
        provider=connection.provider,
        event_type="messages.update",
        body=body,
        status=status,
    )


def delivery(campaign: Campaign, contact: Contact, status: str, **fields: Any) -> Delivery:
    return Delivery.objects.create(
        tenant=campaign.tenant,
        campaign=campaign,
        contact=contact,
        phone=contact.phone,
        text=f"Oi {contact.name}, sua fatura",
        status=status,
        **fields,
    )


@pytest.fixture
def world(acme: Tenant, globex: Tenant, alice: User) -> dict[str, Any]:
    connection = make_connection(acme, Connection.Provider.EVOLUTION)
    maria = Contact.objects.create(
        tenant=acme,
        phone=PHONE,
        name=NAME,
        attributes={"cpf": CPF, "address": "Rua das Flores, 12"},
        tags=["lgpd-vip"],
    )
    joao = Contact.objects.create(tenant=acme, phone="+5521988887777", name="João Lima")

    def campaign(name: str, status: str) -> Campaign:
        return Campaign.objects.create(
            tenant=acme, name=name, connection=connection, message="Oi {{name}}", status=status, created_by=alice
        )

    finished, running, older = (
        campaign("Finished", Campaign.Status.FINISHED),
        campaign("Running", Campaign.Status.RUNNING),
        campaign("Older", Campaign.Status.FINISHED),
    )
    read = delivery(finished, maria, Delivery.Status.READ, provider_message_id="wamid.maria")
    delivery(finished, joao, Delivery.Status.DELIVERED, provider_message_id="wamid.joao")
    delivery(running, maria, Delivery.Status.PENDING)
    delivery(running, joao, Delivery.Status.PENDING)
    failed = delivery(
        older, maria, Delivery.Status.FAILED, error_code="131026", error_message=f"{PHONE} is not on WhatsApp"
    )
    for row, status in ((read, "read"), (failed, "failed")):
        DeliveryEvent.objects.create(
            tenant=acme,
            delivery=row,
            status=status,
            occurred_at=row.created_at,
            event="messages.update",
            error_message=f"{DIGITS} unreachable" if status == "failed" else "",
        )
    campaign_recalc_stats(campaign_ids=[finished.pk, running.pk, older.pk], fix=True)

    maria_bodies = [
        store(connection, body_with(DIGITS, "wamid.maria", "READ"), WebhookEvent.Status.PROCESSED),
        store(connection, json.dumps(evolution_incoming_message()).replace("5511999990000", DIGITS), "ignored"),
        store(connection, body_with(OLD_FORM, "wamid.maria"), WebhookEvent.Status.PROCESSED),
        store(connection, body_with(DIGITS), WebhookEvent.Status.FAILED),
    ]
    kept = [
        store(connection, body_with("5521988887777", "wamid.joao"), WebhookEvent.Status.PROCESSED),
        store(connection, body_with("1" + DIGITS + "1"), WebhookEvent.Status.PROCESSED),  # a longer number
        store(make_connection(globex, Connection.Provider.EVOLUTION), body_with(DIGITS), "processed"),
    ]
    # An admin edited the contact once: its history names the contact.
    LogEntry.objects.create(
        user=alice,
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=str(maria.pk),
        object_repr=str(maria),
        action_flag=CHANGE,
        change_message="[]",
    )
    return {
        "maria": maria,
        "joao": joao,
        "campaigns": [finished, running, older],
        "maria_bodies": maria_bodies,
        "kept": kept,
    }


def counters(world: dict[str, Any]) -> list[dict[str, int]]:
    for campaign in world["campaigns"]:
        campaign.refresh_from_db()
    return [c.stats for c in world["campaigns"]]


def personal_data_left(globex: Tenant) -> list[str]:
    """Every row of every table (globex's own rows aside) that holds one of PERSONAL."""
    found = []
    for model in apps.get_models():
        rows = model._default_manager.all()
        if any(f.name == "tenant" for f in model._meta.fields):
            rows = rows.exclude(tenant=globex)
        text = serializers.serialize("json", rows)
        # A number counts on its own, not inside a longer one (another person's).
        found += [f"{model._meta.label}: {n}" for n in PERSONAL if re.search(rf"(?<!\d){re.escape(n)}(?!\d)", text)]
    return found


def test_delete_answers_204_and_keeps_an_audit_record(api_alice: ApiClient, world: dict[str, Any]) -> None:
    response = api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")

    assert response.status_code == 204
    assert not Contact.objects.filter(pk=world["maria"].pk).exists()
    assert Contact.objects.filter(pk=world["joao"].pk, name="João Lima").exists()
    erasure = ContactErasure.objects.get()
    assert erasure.tenant.slug == "acme"
    assert erasure.erased_by is not None
    assert (erasure.erased_by.username, erasure.erased_by_name, erasure.via) == ("alice", "alice", "api")
    assert (erasure.deliveries_anonymized, erasure.deliveries_cancelled, erasure.webhook_events_deleted) == (3, 1, 4)
    assert api_alice.get_json(f"/api/contacts/{world['maria'].pk}/").status_code == 404
    assert api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/").status_code == 404


def test_no_personal_data_is_left_in_the_database(api_alice: ApiClient, world: dict[str, Any], globex: Tenant) -> None:
    assert personal_data_left(globex)  # the scan finds what is there before

    api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")

    assert personal_data_left(globex) == []


def test_deliveries_stay_as_anonymous_rows_and_counters_stay_exact(api_alice: ApiClient, world: dict[str, Any]) -> None:
    finished, running, older = world["campaigns"]
    before = counters(world)
    statuses = dict(Delivery.objects.filter(contact=world["maria"]).values_list("campaign_id", "status"))
    events = DeliveryEvent.objects.count()

    api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")

    after = counters(world)
    assert after[0] == before[0] and after[2] == before[2]  # sent, delivered, read, failed: unchanged
    assert after[1] == {**before[1], "pending": 1, "cancelled": 1}  # the unsent one is cancelled
    assert campaign_recalc_stats(campaign_ids=[c.pk for c in world["campaigns"]], fix=False) == []
    call_command("recalc_campaign_stats", "--all", "--check", stdout=StringIO())  # exit 0: no drift
    anonymous = Delivery.objects.filter(phone=services.ERASED_PHONE)
    assert anonymous.count() == 3
    assert set(anonymous.values_list("contact", "text", "error_message")) == {(None, "", "")}
    assert dict(anonymous.values_list("campaign_id", "status")) == {
        finished.pk: statuses[finished.pk],
        running.pk: "cancelled",
        older.pk: statuses[older.pk],
    }
    assert anonymous.get(campaign=older).error_code == "131026"  # why it failed stays; the text went
    assert DeliveryEvent.objects.count() == events
    assert Delivery.objects.filter(contact=world["joao"]).count() == 2


def test_only_that_contacts_webhook_bodies_in_that_tenant_go(api_alice: ApiClient, world: dict[str, Any]) -> None:
    api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")

    assert not WebhookEvent.objects.filter(pk__in=[e.pk for e in world["maria_bodies"]]).exists()
    assert WebhookEvent.objects.filter(pk__in=[e.pk for e in world["kept"]]).count() == 3


def test_a_pending_webhook_with_the_number_is_applied_then_deleted(api_alice: ApiClient, world: dict[str, Any]) -> None:
    finished = world["campaigns"][0]
    joao_row = Delivery.objects.get(campaign=finished, contact=world["joao"])
    # Joao's delivered message is read; the provider's body also names Maria (a group chat).
    event = store(finished.connection, body_with(DIGITS, "wamid.joao", "READ"), WebhookEvent.Status.PENDING)
    before = counters(world)[0]

    api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")

    assert not WebhookEvent.objects.filter(pk=event.pk).exists()
    assert Delivery.objects.get(pk=joao_row.pk).status == "read"
    assert counters(world)[0] == {**before, "read": before["read"] + 1}
    assert campaign_recalc_stats(campaign_ids=[finished.pk], fix=False) == []


def test_another_tenant_cannot_erase_it(api_charlie: ApiClient, world: dict[str, Any]) -> None:
    response = api_charlie.delete_json(f"/api/contacts/{world['maria'].pk}/")

    assert response.status_code == 404
    assert Contact.objects.filter(pk=world["maria"].pk, name=NAME).exists()
    assert not ContactErasure.objects.exists()
    assert WebhookEvent.objects.count() == 7


def test_the_contacts_page_asks_first_then_erases(world: dict[str, Any], bob: User) -> None:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    assert client.login(username="bob", password=PASSWORD)
    listing = client.get("/contacts/").content.decode()
    assert f"/contacts/{world['maria'].pk}/erase/" in listing

    confirm = client.get(f"/contacts/{world['maria'].pk}/erase/")
    assert confirm.status_code == 200
    assert PHONE in confirm.content.decode() and "Erase for good" in confirm.content.decode()
    assert Contact.objects.filter(pk=world["maria"].pk).exists()  # asking changes nothing

    response = client.post(f"/contacts/{world['maria'].pk}/erase/", follow=True)
    assert response.redirect_chain == [("/contacts/", 302)]
    assert "The contact was erased" in response.content.decode()
    assert not Contact.objects.filter(pk=world["maria"].pk).exists()
    erasure = ContactErasure.objects.get()
    assert (erasure.erased_by_name, erasure.via) == ("bob", "page")


def test_the_page_refuses_another_tenants_contact(world: dict[str, Any], charlie: User) -> None:
    client = Client()
    client.force_login(charlie)
    assert client.get(f"/contacts/{world['maria'].pk}/erase/").status_code == 404
    assert client.post(f"/contacts/{world['maria'].pk}/erase/").status_code == 404
    assert Contact.objects.filter(pk=world["maria"].pk).exists()


@pytest.fixture
def admin_client(db: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", PASSWORD))
    return client


def test_deleting_in_the_admin_is_an_erasure(admin_client: Client, world: dict[str, Any], globex: Tenant) -> None:
    response = admin_client.post(f"/admin/campaigns/contact/{world['maria'].pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Contact.objects.filter(pk=world["maria"].pk).exists()
    erasure = ContactErasure.objects.get()
    assert (erasure.erased_by_name, erasure.via, erasure.deliveries_anonymized) == ("root", "admin", 3)
    assert personal_data_left(globex) == []  # the admin's own history included


def test_the_admins_bulk_delete_erases_each_contact(admin_client: Client, world: dict[str, Any]) -> None:
    ids = [world["maria"].pk, world["joao"].pk]
    response = admin_client.post(
        "/admin/campaigns/contact/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )

    assert response.status_code == 302
    assert not Contact.objects.filter(pk__in=ids).exists()
    assert ContactErasure.objects.filter(via="admin").count() == 2
    assert Delivery.objects.filter(phone=services.ERASED_PHONE).count() == 5
    assert campaign_recalc_stats(campaign_ids=[c.pk for c in world["campaigns"]], fix=False) == []


def test_the_erasure_record_is_read_only_in_the_admin(admin_client: Client, api_alice: ApiClient, world: Any) -> None:
    api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")
    erasure = ContactErasure.objects.get()
    assert admin_client.get("/admin/campaigns/contacterasure/").status_code == 200
    refused = admin_client.post(f"/admin/campaigns/contacterasure/{erasure.pk}/delete/", {"post": "yes"})
    assert refused.status_code == 403
    assert ContactErasure.objects.filter(pk=erasure.pk).exists()


def test_the_log_line_names_no_one(
    api_alice: ApiClient, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        api_alice.delete_json(f"/api/contacts/{world['maria'].pk}/")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "contact erased for tenant acme via api" in text
    assert not [needle for needle in PERSONAL if needle in text]


@pytest.mark.parametrize(
    ("phone", "forms"),
    [
        ("+5511999990000", ["5511999990000", "551199990000"]),  # Brazilian mobile: both WhatsApp ids
        ("+551133334444", ["551133334444"]),  # Brazilian landline
        ("+14155550100", ["14155550100"]),
        ("", []),
    ],
)
def test_the_number_is_searched_in_each_form_providers_use(phone: str, forms: list[str]) -> None:
    assert retention.phone_digit_forms(phone) == forms
