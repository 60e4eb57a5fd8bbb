"""The consent keywords page (/contacts/settings/consent/): admins edit the tenant's
`ConsentSettings`, operators read them; and the Django admin's consent and inbound views."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from campaigns import services
from campaigns.models import Connection, ConsentEvent, ConsentSettings, Contact, InboundMessage
from sense.models import Tenant
from tests.campaigns.conversation import inbound
from tests.conftest import PASSWORD
from tests.dashboard.conftest import login

URL = "/contacts/settings/consent/"
FORM = {
    "opt_out_keywords": "Chega\nSAIR, parar",
    "opt_in_keywords": "Quero\nVOLTAR",
    "opt_out_reply": "Pronto, você não receberá mais mensagens.",
    "opt_in_reply": "",
}


def test_the_page_shows_the_defaults(alice: User, acme: Tenant) -> None:
    page = login("alice").get(URL).content.decode()

    assert "DESCADASTRAR" in page and "UNSUBSCRIBE" in page and "ASSINAR" in page
    assert not ConsentSettings.objects.filter(tenant=acme).exists()  # reading writes nothing


def test_an_admin_saves_the_keywords_and_they_match(alice: User, acme: Tenant) -> None:
    response = login("alice").post(URL, FORM)

    assert response.status_code == 302
    saved = ConsentSettings.objects.get(tenant=acme)
    assert saved.opt_out_keywords == ["Chega", "SAIR", "parar"]
    assert saved.opt_in_keywords == ["Quero", "VOLTAR"]
    assert saved.opt_out_reply.startswith("Pronto") and saved.opt_in_reply == ""
    assert saved.match(" chega! ") is True and saved.match("quero") is False and saved.match("STOP") is None
    assert login("alice").get(URL).content.decode().count("Chega") == 1


def test_the_opt_out_list_cannot_be_emptied(alice: User, acme: Tenant) -> None:
    response = login("alice").post(URL, {**FORM, "opt_out_keywords": " , \n"})

    assert response.status_code == 200 and "form-error" in response.content.decode()
    assert not ConsentSettings.objects.filter(tenant=acme).exists()


def test_a_keyword_cannot_both_opt_out_and_in(alice: User, acme: Tenant) -> None:
    response = login("alice").post(URL, {**FORM, "opt_in_keywords": "chegá"})

    assert response.status_code == 200 and "chega" in response.content.decode()
    assert not ConsentSettings.objects.filter(tenant=acme).exists()


def test_an_operator_reads_but_cannot_change_them(bob: User, acme: Tenant) -> None:
    client = login("bob")

    page = client.get(URL).content.decode()
    refused = client.post(URL, FORM)

    assert "disabled" in page and 'type="submit" class="primary"' not in page
    assert refused.status_code == 403
    assert not ConsentSettings.objects.filter(tenant=acme).exists()


def test_each_tenant_has_its_own(alice: User, charlie: User, acme: Tenant, globex: Tenant) -> None:
    login("alice").post(URL, FORM)

    assert "Chega" not in login("charlie").get(URL).content.decode()
    assert ConsentSettings.for_tenant(globex).match("chega") is None


def _staff() -> Client:
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    return login("root")


def test_the_admin_edits_settings_and_lists_consent_and_inbound_read_only(
    acme: Tenant, alice: User, evolution: Connection
) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    services.contact_consent_change(contact=ana, opted_out=True, source=ConsentEvent.Source.KEYWORD)
    message = inbound(ana, evolution, "SAIR")
    settings = ConsentSettings.objects.create(tenant=acme)
    client = _staff()

    for path in (
        "/admin/campaigns/consentsettings/",
        f"/admin/campaigns/consentsettings/{settings.pk}/change/",
        "/admin/campaigns/consentevent/",
        "/admin/campaigns/inboundmessage/",
        f"/admin/campaigns/inboundmessage/{message.pk}/change/",
    ):
        assert client.get(path).status_code == 200, path
    assert client.get("/admin/campaigns/consentevent/add/").status_code == 403
    assert client.get("/admin/campaigns/inboundmessage/add/").status_code == 403
    assert "SAIR" in client.get("/admin/campaigns/inboundmessage/").content.decode()
    event = ConsentEvent.objects.get(contact=ana)
    assert client.post(f"/admin/campaigns/consentevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert InboundMessage.objects.filter(pk=message.pk).exists()


def test_the_admin_actions_record_consent_events(acme: Tenant, alice: User) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    client = _staff()
    changelist = "/admin/campaigns/contact/"

    client.post(changelist, {"action": "opt_out", "_selected_action": [ana.pk]})
    out = ConsentEvent.objects.get(contact=ana)
    client.post(changelist, {"action": "opt_in", "_selected_action": [ana.pk]})

    assert (out.opted_out, out.source, out.user.get_username()) == (True, "operator", "root")  # type: ignore[union-attr]
    back = ConsentEvent.objects.filter(contact=ana).first()
    assert back is not None and back.opted_out is False and "Django admin" in back.reason
    assert not Contact.objects.get(pk=ana.pk).opted_out


def test_the_admin_contact_form_cannot_flip_the_opt_out(acme: Tenant, alice: User) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    services.contact_consent_change(contact=ana, opted_out=True, source=ConsentEvent.Source.KEYWORD)
    page: Any = _staff().get(f"/admin/campaigns/contact/{ana.pk}/change/")

    assert page.status_code == 200
    assert 'name="opted_out"' not in page.content.decode()
