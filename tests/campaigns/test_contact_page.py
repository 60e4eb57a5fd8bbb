"""The contact page (/contacts/<id>/): profile, consent history and actions, and the
conversation both ways, paged, with media thumbnails and the live partial; the contacts list
links to it; the campaign page's Replies panel."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext

from campaigns import services
from campaigns.models import Campaign, Connection, ConsentEvent, Contact, Delivery, InboundMessage
from sense.models import Tenant
from tests.campaigns.conversation import ago, delivery, image_asset, inbound
from tests.dashboard.conftest import login

HX = {"HX-Request": "true"}


def _ana(acme: Tenant) -> Contact:
    return Contact.objects.create(
        tenant=acme,
        phone="+5511999990001",
        name="Ana Souza",
        tags=["vip", "sp"],
        attributes={"city": "Campinas"},
        avatar_source_url="https://pps.whatsapp.net/v/t61/secret-cdn-picture.jpg",
        avatar_checked_at=ago(minutes=1),
    )


def _campaign(acme: Tenant, connection: Connection, name: str = "Black Friday", **fields: Any) -> Campaign:
    return Campaign.objects.create(tenant=acme, name=name, connection=connection, message="Oi", **fields)


def test_the_page_shows_the_profile_consent_and_the_conversation(
    alice: User, acme: Tenant, evolution: Connection
) -> None:
    ana = _ana(acme)
    campaign = _campaign(acme, evolution)
    sent = delivery(campaign, ana, at=ago(hours=2), status="read")
    photo = image_asset(acme)
    inbound(ana, evolution, "Quero o cupom", at=ago(hours=1), campaign=campaign, delivery=sent)
    inbound(ana, evolution, "", at=ago(minutes=5), type=InboundMessage.Type.IMAGE, media=photo, media_status="stored")
    inbound(ana, evolution, "", at=ago(minutes=4), type=InboundMessage.Type.AUDIO, media_status="unavailable")

    response = login("alice").get(f"/contacts/{ana.pk}/")

    page = response.content.decode()
    assert response.status_code == 200
    for needle in ("Ana Souza", "+5511999990001", "vip", "Campinas", "Receives messages"):
        assert needle in page
    assert "Black Friday for Ana Souza" in page and "Quero o cupom" in page and "Black Friday" in page
    assert "delivery-read" in page
    assert f"/api/media/{photo.pk}/thumbnail/" in page and f"/api/media/{photo.pk}/file/" in page
    assert "Media unavailable" in page
    # Newest first: the picture, then the reply, then what we sent.
    assert page.index(f"/api/media/{photo.pk}/thumbnail/") < page.index("Quero o cupom") < page.index("for Ana Souza")
    # The profile picture only ever through Sense, with the initials under it.
    assert f'src="/contacts/{ana.pk}/avatar/"' in page and ">AS<" in page
    assert "pps.whatsapp.net" not in page
    assert f'data-conversation-contact="{ana.pk}"' in page


def test_a_contact_without_a_picture_shows_its_initials(alice: User, acme: Tenant) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana", avatar_checked_at=ago(minutes=1))

    page = login("alice").get(f"/contacts/{ana.pk}/").content.decode()

    assert ">A<" in page and "/avatar/" not in page
    assert "No messages yet." in page


def test_the_contacts_list_links_to_the_page(alice: User, acme: Tenant) -> None:
    ana = _ana(acme)

    page = login("alice").get("/contacts/").content.decode()

    assert f'href="/contacts/{ana.pk}/"' in page


def test_a_long_conversation_is_paged(alice: User, acme: Tenant, evolution: Connection) -> None:
    ana = _ana(acme)
    InboundMessage.objects.bulk_create(
        InboundMessage(
            tenant=acme,
            connection=evolution,
            contact=ana,
            provider_message_id=f"wamid.p.{n}",
            text=f"line {n:04d}",
            received_at=ago(minutes=2000 - n),
        )
        for n in range(2000)
    )
    client = login("alice")

    with CaptureQueriesContext(db) as queries:
        first = client.get(f"/contacts/{ana.pk}/").content.decode()
    second = client.get(f"/contacts/{ana.pk}/messages/?page=2", headers=HX).content.decode()

    assert len(queries) <= 20, [q["sql"][:80] for q in queries.captured_queries]  # not one per message

    assert "line 1999" in first and "line 1970" in first and "line 1969" not in first
    assert f'hx-get="/contacts/{ana.pk}/messages/?page=2"' in first
    assert "line 1969" in second and "line 1940" in second and "line 1970" not in second
    assert "<html" not in second and f"/contacts/{ana.pk}/messages/?page=3" in second


def test_the_live_partial_is_one_message(alice: User, acme: Tenant, evolution: Connection) -> None:
    ana = _ana(acme)
    other = Contact.objects.create(tenant=acme, phone="+5511999990002")
    message = inbound(ana, evolution, "Chegou agora")
    theirs = inbound(other, evolution, "Not Ana's")
    client = login("alice")

    line = client.get(f"/contacts/{ana.pk}/inbound/{message.pk}/", headers=HX)
    mismatched = client.get(f"/contacts/{ana.pk}/inbound/{theirs.pk}/", headers=HX)

    assert line.status_code == 200
    body = line.content.decode()
    assert body.strip().startswith("<li") and f'id="msg-inbound-{message.pk}"' in body and "Chegou agora" in body
    assert mismatched.status_code == 404


def test_an_operator_opts_a_contact_out_and_the_history_says_who(
    bob: User, acme: Tenant, evolution: Connection
) -> None:
    ana = _ana(acme)
    campaign = _campaign(acme, evolution, status=Campaign.Status.RUNNING, stat_total=1, stat_pending=1)
    pending = delivery(campaign, ana, status="pending")
    client = login("bob")

    response = client.post(f"/contacts/{ana.pk}/consent/", {"action": "opt_out", "reason": "asked on the phone"})

    assert response.status_code == 302
    ana.refresh_from_db()
    assert ana.opted_out and ana.opt_out_source == "operator"
    event = ConsentEvent.objects.get(contact=ana)
    assert (event.opted_out, event.source, event.user, event.reason) == (True, "operator", bob, "asked on the phone")
    assert Delivery.objects.get(pk=pending.pk).status == "cancelled"
    page = client.get(f"/contacts/{ana.pk}/").content.decode()
    assert "data-opted-out" in page and "bob" in page and "asked on the phone" in page
    assert 'name="action" value="opt_in"' in page


def test_opting_back_in_without_a_reason_is_a_form_error(alice: User, acme: Tenant) -> None:
    ana = _ana(acme)
    services.contact_consent_change(contact=ana, opted_out=True, source="keyword")
    client = login("alice")

    refused = client.post(f"/contacts/{ana.pk}/consent/", {"action": "opt_in", "reason": "  "})
    refused_hx = client.post(f"/contacts/{ana.pk}/consent/", {"action": "opt_in"}, headers=HX)

    assert refused.status_code == 200 and "a reason is required" in refused.content.decode()
    assert refused_hx.status_code == 200 and "a reason is required" in refused_hx.content.decode()
    assert 'id="consent"' in refused_hx.content.decode() and "<html" not in refused_hx.content.decode()
    assert Contact.objects.get(pk=ana.pk).opted_out
    assert ConsentEvent.objects.filter(contact=ana).count() == 1


def test_opting_back_in_with_a_reason_is_recorded(alice: User, acme: Tenant, caplog: Any) -> None:
    ana = _ana(acme)
    services.contact_consent_change(contact=ana, opted_out=True, source="keyword")

    with caplog.at_level("INFO", logger="sense.campaigns"):
        response = login("alice").post(
            f"/contacts/{ana.pk}/consent/", {"action": "opt_in", "reason": "Signed the form again"}, headers=HX
        )

    assert response.status_code == 200 and "Receives messages" in response.content.decode()
    assert not Contact.objects.get(pk=ana.pk).opted_out
    latest = ConsentEvent.objects.filter(contact=ana).first()
    assert latest is not None
    assert (latest.opted_out, latest.source, latest.user, latest.reason) == (
        False,
        "operator",
        alice,
        "Signed the form again",
    )
    assert any("opted back in" in r.getMessage() and "Signed the form again" in r.getMessage() for r in caplog.records)


def test_another_tenants_contact_page_is_a_404(charlie: User, acme: Tenant) -> None:
    ana = _ana(acme)
    client = login("charlie")
    for path in ("", "messages/", "avatar/"):
        assert client.get(f"/contacts/{ana.pk}/{path}").status_code == 404
    assert client.post(f"/contacts/{ana.pk}/consent/", {"action": "opt_out"}).status_code == 404
    assert not Contact.objects.get(pk=ana.pk).opted_out


def test_the_campaign_page_lists_its_replies_newest_first(alice: User, acme: Tenant, evolution: Connection) -> None:
    ana = _ana(acme)
    bea = Contact.objects.create(tenant=acme, phone="+5511999990002", name="Bea")
    campaign = _campaign(acme, evolution)
    inbound(ana, evolution, "Primeira resposta", at=ago(hours=2), campaign=campaign)
    inbound(bea, evolution, "Segunda resposta", at=ago(hours=1), campaign=campaign)
    inbound(bea, evolution, "Sem campanha", at=ago(minutes=1))
    client = login("alice")

    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()

    assert page.index("Segunda resposta") < page.index("Primeira resposta")
    assert "Sem campanha" not in page
    assert f'href="/contacts/{ana.pk}/"' in page and f'href="/contacts/{bea.pk}/"' in page
    assert f'data-replies-campaign="{campaign.pk}"' in page


def test_the_replies_panel_is_paged(alice: User, acme: Tenant, evolution: Connection) -> None:
    ana = _ana(acme)
    campaign = _campaign(acme, evolution)
    for n in range(25):
        inbound(ana, evolution, f"reply {n:02d}", at=ago(minutes=100 - n), campaign=campaign)
    client = login("alice")

    first = client.get(f"/campaigns/{campaign.pk}/replies/", headers=HX).content.decode()
    second = client.get(f"/campaigns/{campaign.pk}/replies/?replies_page=2", headers=HX).content.decode()

    assert "reply 24" in first and "reply 05" in first and "reply 04" not in first
    assert "reply 04" in second and "reply 00" in second and "reply 05" not in second
    assert "<html" not in first
    assert client.get(f"/campaigns/{campaign.pk}/replies/").status_code == 302  # a plain visit: the page


def test_another_tenants_replies_are_a_404(charlie: User, acme: Tenant, evolution: Connection) -> None:
    campaign = _campaign(acme, evolution)
    assert login("charlie").get(f"/campaigns/{campaign.pk}/replies/", headers=HX).status_code == 404


def test_the_page_needs_a_login(acme: Tenant) -> None:
    ana = _ana(acme)
    response = Client().get(f"/contacts/{ana.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_first_page_refreshes_the_whole_list(alice: User, acme: Tenant, evolution: Connection) -> None:
    """What live.js fetches again after the socket reconnected: replies missed meanwhile appear."""
    ana = _ana(acme)
    inbound(ana, evolution, "Enquanto a página estava desconectada")

    body = login("alice").get(f"/contacts/{ana.pk}/messages/", headers=HX).content.decode()

    assert body.strip().startswith('<ol class="conversation"') and "data-live-refresh" in body
    assert "Enquanto a página estava desconectada" in body
