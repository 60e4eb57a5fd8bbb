"""The conversation and consent API: GET /api/contacts/{id}/messages/, /consent/,
POST /opt-in/ and /opt-out/, GET /api/inbound/, and what contacts and deliveries show."""

from __future__ import annotations

from typing import Any

from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from campaigns import services
from campaigns.models import Campaign, Connection, ConsentEvent, Contact, Delivery, InboundMessage
from sense.models import Tenant
from tests.campaigns.conversation import ago, delivery, image_asset, inbound
from tests.conftest import ApiClient


def _campaign(tenant: Tenant, connection: Connection, name: str = "Black Friday", **fields: Any) -> Campaign:
    return Campaign.objects.create(tenant=tenant, name=name, connection=connection, message="Oi", **fields)


def test_the_conversation_merges_both_ways_newest_first(
    api_alice: ApiClient, acme: Tenant, evolution: Connection
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    first = delivery(_campaign(acme, evolution, "First"), ana, at=ago(hours=3))
    reply = inbound(ana, evolution, "Quero saber mais", at=ago(hours=2))
    second = delivery(_campaign(acme, evolution, "Second"), ana, at=ago(hours=1), status="read")
    latest = inbound(ana, evolution, "Obrigada", at=ago(minutes=5), campaign=second.campaign, delivery=second)

    body = api_alice.get_json(f"/api/contacts/{ana.pk}/messages/").json()

    assert body["count"] == 4
    assert [(i["kind"], i["id"]) for i in body["items"]] == [
        ("inbound", latest.pk),
        ("delivery", second.pk),
        ("inbound", reply.pk),
        ("delivery", first.pk),
    ]
    assert body["items"][0] == {
        "kind": "inbound",
        "id": latest.pk,
        "at": body["items"][0]["at"],
        "type": "text",
        "text": "Obrigada",
        "status": "received",
        "campaign_id": str(second.campaign_id),
        "media": None,
    }
    assert body["items"][1]["status"] == "read" and body["items"][1]["campaign_id"] == str(second.campaign_id)


def test_media_come_with_the_media_apps_urls(api_alice: ApiClient, acme: Tenant, evolution: Connection) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    photo = image_asset(acme)
    inbound(ana, evolution, "", type=InboundMessage.Type.IMAGE, media=photo, media_status="stored")
    banner = image_asset(acme, "banner.jpg", origin="upload")
    delivery(_campaign(acme, evolution, media=banner), ana, at=ago(hours=1))

    items = api_alice.get_json(f"/api/contacts/{ana.pk}/messages/").json()["items"]

    assert items[0]["type"] == "image"
    assert items[0]["media"] == {
        "id": str(photo.pk),
        "file_url": f"/api/media/{photo.pk}/file/",
        "thumbnail_url": f"/api/media/{photo.pk}/thumbnail/",
    }
    assert items[1]["type"] == "image" and items[1]["media"]["id"] == str(banner.pk)


def test_pages_of_a_long_conversation_are_exact_and_cheap(
    api_alice: ApiClient, acme: Tenant, evolution: Connection
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    InboundMessage.objects.bulk_create(
        InboundMessage(
            tenant=acme,
            connection=evolution,
            contact=ana,
            provider_message_id=f"wamid.bulk.{n}",
            text=f"message {n}",
            received_at=ago(minutes=3000 - n),
        )
        for n in range(3000)
    )
    sent = delivery(_campaign(acme, evolution), ana, at=ago(minutes=48, seconds=30))  # between 2951 and 2952

    with CaptureQueriesContext(db) as queries:
        page = api_alice.get_json(f"/api/contacts/{ana.pk}/messages/?page=2&page_size=25").json()

    assert page["count"] == 3001
    texts = [i["text"] or i["kind"] for i in page["items"]]
    # Newest first: messages 2999..2975 fill page 1; page 2 holds 2974..2952, the delivery,
    # then 2951.
    assert len(texts) == 25
    assert texts[:3] == ["message 2974", "message 2973", "message 2972"]
    assert [i["kind"] for i in page["items"]].index("delivery") == 23
    assert page["items"][23]["id"] == sent.pk
    assert texts[-1] == "message 2951"
    assert len(queries) <= 12  # auth, two counts, two key reads, the page's rows: not one per message


def test_another_tenants_contact_is_a_404(api_charlie: ApiClient, acme: Tenant, charlie: Any) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    for path in ("messages/", "consent/"):
        response = api_charlie.get_json(f"/api/contacts/{ana.pk}/{path}")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    for path in ("opt-in/", "opt-out/"):
        response = api_charlie.post_json(f"/api/contacts/{ana.pk}/{path}", {"reason": "x"})
        assert response.status_code == 404
    assert not ConsentEvent.objects.exists()


def test_opting_in_needs_a_reason(api_alice: ApiClient, acme: Tenant, alice: Any) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    services.contact_consent_change(contact=ana, opted_out=True, source="keyword")

    for payload in ({}, {"reason": "   "}):
        response = api_alice.post_json(f"/api/contacts/{ana.pk}/opt-in/", payload)
        assert response.status_code == 400
        assert response.json()["code"] == "reason_required"
    assert Contact.objects.get(pk=ana.pk).opted_out

    response = api_alice.post_json(f"/api/contacts/{ana.pk}/opt-in/", {"reason": "Asked by phone on 1 Dec"})

    assert response.status_code == 200
    assert response.json()["opted_out"] is False and response.json()["opted_out_at"] is None
    event = ConsentEvent.objects.filter(contact=ana).first()
    assert event is not None
    assert (event.opted_out, event.source, event.user, event.reason) == (False, "api", alice, "Asked by phone on 1 Dec")


def test_opting_out_records_the_event_and_the_history_lists_it(api_alice: ApiClient, acme: Tenant) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")

    out = api_alice.post_json(f"/api/contacts/{ana.pk}/opt-out/", {"reason": "complained"}).json()
    again = api_alice.post_json(f"/api/contacts/{ana.pk}/opt-out/", {})
    history = api_alice.get_json(f"/api/contacts/{ana.pk}/consent/").json()

    assert out["opted_out"] is True and out["opt_out_source"] == "api" and out["opted_out_at"]
    assert again.status_code == 200  # already opted out: nothing new
    assert len(history) == 1
    assert history[0]["opted_out"] is True and history[0]["source"] == "api"
    assert history[0]["user"] == "alice" and history[0]["reason"] == "complained"


def test_a_plain_edit_cannot_clear_an_opt_out(api_alice: ApiClient, acme: Tenant) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    services.contact_consent_change(contact=ana, opted_out=True, source="keyword")

    response = api_alice.patch_json(f"/api/contacts/{ana.pk}/", {"opted_out": False, "name": "Ana Paula"})

    assert response.status_code == 409
    assert response.json()["code"] == "opt_in_requires_reason"
    assert "opt-in" in response.json()["error"]
    ana.refresh_from_db()
    assert ana.opted_out and ana.name == "Ana"  # nothing of the edit was applied
    assert ConsentEvent.objects.filter(contact=ana).count() == 1


def test_opting_out_by_an_edit_goes_through_the_consent_service(
    api_alice: ApiClient, acme: Tenant, evolution: Connection
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    campaign = _campaign(acme, evolution, status=Campaign.Status.RUNNING, stat_total=1, stat_pending=1)
    pending = delivery(campaign, ana, status="pending")

    response = api_alice.patch_json(f"/api/contacts/{ana.pk}/", {"opted_out": True, "name": "Ana"})

    assert response.status_code == 200 and response.json()["opted_out"] is True
    assert response.json()["name"] == "Ana" and response.json()["opt_out_source"] == "api"
    assert ConsentEvent.objects.get(contact=ana).source == "api"
    assert Delivery.objects.get(pk=pending.pk).status == "cancelled"
    campaign.refresh_from_db()
    assert (campaign.stat_pending, campaign.stat_cancelled) == (0, 1)
    # Unchanged opt-out in an edit is fine.
    assert api_alice.patch_json(f"/api/contacts/{ana.pk}/", {"opted_out": True}).status_code == 200


def test_a_contact_created_opted_out_has_its_event(api_alice: ApiClient, acme: Tenant) -> None:
    body = api_alice.post_json("/api/contacts/", {"phone": "+5511999990009", "opted_out": True}).json()

    assert body["opted_out"] is True and body["opt_out_source"] == "api"
    assert ConsentEvent.objects.get(contact_id=body["id"]).opted_out is True


def test_contacts_show_a_sense_avatar_url_or_none(api_alice: ApiClient, acme: Tenant) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    hidden = Contact.objects.create(tenant=acme, phone="+5511999990002", avatar_checked_at=ago(minutes=1))

    assert api_alice.get_json(f"/api/contacts/{ana.pk}/").json()["avatar_url"] == f"/contacts/{ana.pk}/avatar/"
    assert api_alice.get_json(f"/api/contacts/{hidden.pk}/").json()["avatar_url"] is None
    Contact.objects.filter(pk=ana.pk).update(avatar_source_url="https://pps.whatsapp.net/v/secret.jpg")
    listed = api_alice.get_json("/api/contacts/").content.decode()
    assert "pps.whatsapp.net" not in listed


def test_deliveries_show_when_they_were_replied_to(api_alice: ApiClient, acme: Tenant, evolution: Connection) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    campaign = _campaign(acme, evolution)
    sent = delivery(campaign, ana, replied_at=ago(minutes=2))

    body = api_alice.get_json(f"/api/campaigns/{campaign.pk}/deliveries/{sent.pk}/").json()

    assert body["replied_at"] is not None


def test_recent_inbound_messages_filter_by_campaign_and_text(
    api_alice: ApiClient, api_charlie: ApiClient, acme: Tenant, evolution: Connection
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    campaign = _campaign(acme, evolution)
    old = inbound(ana, evolution, "Quero o cupom", at=ago(hours=2), campaign=campaign)
    new = inbound(ana, evolution, "Qual o prazo?", at=ago(hours=1), campaign=campaign)
    loose = inbound(ana, evolution, "Bom dia", at=ago(minutes=1))

    everything = api_alice.get_json("/api/inbound/").json()
    by_campaign = api_alice.get_json(f"/api/inbound/?campaign_id={campaign.pk}").json()
    by_text = api_alice.get_json("/api/inbound/?q=cupom").json()

    assert [i["id"] for i in everything["items"]] == [loose.pk, new.pk, old.pk]
    assert everything["items"][0]["contact_id"] == ana.pk and everything["items"][0]["campaign_id"] is None
    assert [i["id"] for i in by_campaign["items"]] == [new.pk, old.pk] and by_campaign["count"] == 2
    assert [i["id"] for i in by_text["items"]] == [old.pk]
    assert api_charlie.get_json("/api/inbound/").json() == {"count": 0, "items": []}
    refused = api_charlie.get_json(f"/api/inbound/?campaign_id={campaign.pk}")
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"


def test_a_refused_edit_does_not_opt_out(api_alice: ApiClient, acme: Tenant) -> None:
    Contact.objects.create(tenant=acme, phone="+5511999990002")
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")

    response = api_alice.patch_json(f"/api/contacts/{ana.pk}/", {"opted_out": True, "phone": "+5511999990002"})

    assert response.status_code == 409 and response.json()["code"] == "duplicate_phone"
    assert not Contact.objects.get(pk=ana.pk).opted_out and not ConsentEvent.objects.exists()
