"""Consent changes (`contact_consent_change`) and opt-out keyword matching."""

from __future__ import annotations

import pytest

from campaigns import services
from campaigns.models import Campaign, ConsentEvent, ConsentSettings, Contact, Delivery
from sense.models import Tenant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SAIR", True),
        ("Sair", True),
        (" sair! ", True),
        ("sáir", True),
        ("PARAR.", True),
        ("unsubscribe", True),
        ("quero sair daqui", None),
        ("sair sair", None),
        ("", None),
        ("voltar", False),
        ("Start!", False),
        ("olá", None),
    ],
)
def test_keywords_match_the_whole_text_without_accents_case_or_punctuation(
    acme: Tenant, text: str, expected: bool | None
) -> None:
    assert ConsentSettings.for_tenant(acme).match(text) is expected


def test_a_tenants_own_keywords_replace_the_defaults(acme: Tenant) -> None:
    ConsentSettings.objects.create(tenant=acme, opt_out_keywords=["Chega"], opt_in_keywords=["Quero"])
    settings = ConsentSettings.for_tenant(acme)
    assert settings.match("chega!") is True
    assert settings.match("SAIR") is None
    assert settings.match("QUERO") is False


def _running_campaign(acme: Tenant, connection, contacts: list[Contact], status: str) -> Campaign:
    campaign = Campaign.objects.create(tenant=acme, name=status, connection=connection, message="hi", status=status)
    for contact in contacts:
        Delivery.objects.create(tenant=acme, campaign=campaign, contact=contact, phone=contact.phone, text="hi")
    Campaign.objects.filter(pk=campaign.pk).update(stat_total=len(contacts), stat_pending=len(contacts))
    return campaign


def test_opting_out_cancels_pending_deliveries_of_running_and_paused_campaigns_only(acme: Tenant, evolution) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana")
    other = Contact.objects.create(tenant=acme, phone="+5511999990002")
    running = _running_campaign(acme, evolution, [ana, other], Campaign.Status.RUNNING)
    paused = _running_campaign(acme, evolution, [ana], Campaign.Status.PAUSED)
    draft = _running_campaign(acme, evolution, [ana], Campaign.Status.DRAFT)
    sent = Delivery.objects.get(campaign=running, contact=other)
    Delivery.move(sent.pk, from_status="pending", to_status="sent")

    assert services.contact_consent_change(contact=ana, opted_out=True, source=ConsentEvent.Source.KEYWORD)

    ana.refresh_from_db()
    assert ana.opted_out and ana.opt_out_source == "keyword" and ana.opted_out_at is not None
    assert Delivery.objects.get(campaign=running, contact=ana).status == "cancelled"
    assert Delivery.objects.get(campaign=running, contact=ana).error_code == "opted_out"
    assert Delivery.objects.get(campaign=paused, contact=ana).status == "cancelled"
    assert Delivery.objects.get(campaign=draft, contact=ana).status == "pending"
    running.refresh_from_db()
    assert (running.stat_pending, running.stat_cancelled, running.stat_sent) == (0, 1, 1)
    assert running.status == Campaign.Status.FINISHED  # nothing left to send
    event = ConsentEvent.objects.get(contact=ana)
    assert (event.opted_out, event.source, event.tenant_id) == (True, "keyword", acme.pk)


def test_a_repeated_change_records_nothing_and_opting_in_clears_the_source(acme: Tenant, alice) -> None:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001")
    assert services.contact_consent_change(contact=ana, opted_out=True, source="provider")
    assert not services.contact_consent_change(contact=ana, opted_out=True, source="keyword")
    assert services.contact_consent_change(
        contact=ana, opted_out=False, source="operator", user=alice, reason="asked by phone"
    )
    ana.refresh_from_db()
    assert (ana.opted_out, ana.opt_out_source, ana.opted_out_at) == (False, "", None)
    events = list(ConsentEvent.objects.filter(contact=ana).order_by("at", "id"))
    assert [(e.opted_out, e.source) for e in events] == [(True, "provider"), (False, "operator")]
    assert events[1].user == alice and events[1].reason == "asked by phone"
