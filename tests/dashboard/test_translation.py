"""The pt-BR catalog: complete, compiled, and what the pages show to a Brazilian team."""

from __future__ import annotations

import ast
import gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns.models import Campaign, CampaignActivity, Connection, Delivery, MessageTemplate
from sense.models import Tenant
from tests.conftest import ApiClient
from tests.dashboard.conftest import login, make_campaign

LOCALE = Path(settings.BASE_DIR) / "locale" / "pt_BR" / "LC_MESSAGES"


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file, header first, obsolete (`#~`) ones left out; a small
    reader, so the test needs no gettext tools."""
    entries: list[Entry] = []
    current = Entry()
    keyword = ""
    flags: set[str] = set()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#,"):
            flags |= {flag.strip() for flag in line[2:].split(",")}
        if not line or line.startswith("#"):
            continue
        if line.startswith('"'):  # continues the previous keyword's string
            text = line
        else:
            keyword, _, text = line.partition(" ")
            # An entry starts with its msgctxt, or its msgid when it has none.
            if keyword == "msgctxt" or (keyword == "msgid" and (not entries or current.msgstr)):
                current = Entry(flags=flags)
                entries.append(current)
                flags = set()
        value = ast.literal_eval(text)
        assert isinstance(value, str), f"line {number}: {raw!r}"
        if keyword == "msgctxt":
            current.msgctxt = (current.msgctxt or "") + value
        elif keyword == "msgid":
            current.msgid += value
        elif keyword == "msgid_plural":
            current.msgid_plural = (current.msgid_plural or "") + value
        elif match := re.fullmatch(r"msgstr(?:\[(\d)\])?", keyword):
            index = int(match.group(1) or 0)
            current.msgstr[index] = current.msgstr.get(index, "") + value
        else:
            raise AssertionError(f"line {number}: unexpected {raw!r}")
    return entries


PLACEHOLDER = re.compile(r"%\(\w+\)[sdf]|\{\{\s*\w+\s*\}\}")


@pytest.fixture(scope="module")
def catalog() -> list[Entry]:
    entries = read_po(LOCALE / "django.po")
    assert entries[0].msgid == "" and "nplurals=2; plural=(n > 1);" in entries[0].msgstr[0]
    return entries[1:]


def test_every_entry_is_translated_and_none_is_fuzzy(catalog: list[Entry]) -> None:
    assert len(catalog) > 500
    fuzzy = [e.msgid for e in catalog if "fuzzy" in e.flags]
    empty = [e.msgid for e in catalog if not all(e.msgstr.get(i) for i in range(2 if e.msgid_plural else 1))]
    assert not fuzzy, f"fuzzy: {fuzzy}"
    assert not empty, f"untranslated: {empty}"


def test_translations_keep_every_placeholder(catalog: list[Entry]) -> None:
    for entry in catalog:
        if entry.msgid.startswith("Placeholders: {{name}}"):
            continue  # {{attribute}} there names any attribute, and is translated as such
        for index, text in entry.msgstr.items():
            source = entry.msgid_plural if index and entry.msgid_plural else entry.msgid
            assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(source)), (entry.msgid, text)


def test_the_committed_mo_is_compiled_from_the_po(catalog: list[Entry]) -> None:
    with (LOCALE / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for entry in catalog:
        if entry.msgid_plural:
            got = [
                compiled.npgettext(entry.msgctxt, entry.msgid, entry.msgid_plural, n)
                if entry.msgctxt
                else compiled.ngettext(entry.msgid, entry.msgid_plural, n)
                for n in (1, 2)
            ]
            assert got == [entry.msgstr[0], entry.msgstr[1]], f"recompile the .mo: {entry.msgid!r}"
        else:
            text = compiled.pgettext(entry.msgctxt, entry.msgid) if entry.msgctxt else compiled.gettext(entry.msgid)
            assert text == entry.msgstr[0], f"recompile the .mo: {entry.msgid!r}"


def test_the_campaign_page_explains_waiting_and_failures_in_portuguese(alice: object, acme: Tenant) -> None:
    campaign = make_campaign(acme, status="running")
    Connection.objects.filter(pk=campaign.connection_id).update(provider=Connection.Provider.CLOUD)
    Campaign.objects.filter(pk=campaign.pk).update(waiting_reason="window", next_send_at=timezone.now(), stat_failed=1)
    delivery = Delivery.objects.filter(campaign=campaign).order_by("pk").last()
    assert delivery is not None
    Delivery.objects.filter(pk=delivery.pk).update(status="failed", error_code="131026", error_message="x")

    page = login("alice", "pt-br").get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Aguardando: Fora da janela de envio" in page
    assert "Falhas por código de erro" in page
    assert "O número não está no WhatsApp" in page  # the cloud_errors guidance
    assert "Reenviar falhas" in page and "Exportar CSV" in page
    english = login("alice").get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Outside its send window" in english and "Failures by error code" in english


def test_the_templates_consent_and_activity_pages_speak_portuguese(alice: object, acme: Tenant) -> None:
    campaign = make_campaign(acme, deliveries=0)
    cloud = Connection.objects.create(
        tenant=acme, name="Cloud", provider=Connection.Provider.CLOUD, base_url="http://127.0.0.1:9", credentials={}
    )
    MessageTemplate.objects.create(tenant=acme, connection=cloud, name="promo", language="pt_BR", status="PAUSED")
    CampaignActivity.record(campaign, CampaignActivity.Kind.STARTED, "x")
    client = login("alice", "pt-br")

    templates = client.get("/templates/").content.decode()
    assert "Modelos de mensagem" in templates and "Sincronizar modelos" in templates
    assert '<option value="PAUSED" >Pausado</option>' in templates  # not the campaign's "Pausada"
    consent = client.get("/contacts/settings/consent/").content.decode()
    assert "Palavras-chave de descadastro e recadastro" in consent and "Confirmação de descadastro" in consent
    activity = client.get(f"/campaigns/{campaign.pk}/activity/").content.decode()
    assert "Atividade" in activity and "Iniciada" in activity


def test_the_api_keeps_the_error_guidance_in_english(api_alice: ApiClient, acme: Tenant) -> None:
    campaign = make_campaign(acme, status="finished", deliveries=1)
    Connection.objects.filter(pk=campaign.connection_id).update(provider=Connection.Provider.CLOUD)
    Delivery.objects.filter(campaign=campaign).update(status="failed", error_code="131047", error_message="x")

    path = f"/api/campaigns/{campaign.pk}/deliveries/?status=failed"
    (item,) = api_alice.get_json(path, HTTP_ACCEPT_LANGUAGE="pt-br").json()["items"]
    assert item["error_guidance"] == "Outside the 24-hour window: use a template."
    assert item["not_retryable_reason"] == (
        "Free text outside the 24-hour window: only a template can reach the contact."
    )
    report = api_alice.get_json(f"/api/campaigns/{campaign.pk}/", HTTP_ACCEPT_LANGUAGE="pt-br").json()
    assert report["failures"][0]["guidance"] == "Outside the 24-hour window: use a template."


def test_the_connections_pages_speak_portuguese(alice: object, acme: Tenant) -> None:
    connection = Connection.objects.create(
        tenant=acme, name="Loja", provider=Connection.Provider.EVOLUTION, base_url="http://127.0.0.1:9", credentials={}
    )
    client = login("alice", "pt-br")

    listing = client.get("/connections/").content.decode()
    assert "<h1>Conexões</h1>" in listing and "Enviadas hoje" in listing and "Último webhook" in listing
    assert "nenhum na última hora" in listing and "(sem limite diário)" in listing
    page = client.get(f"/connections/{connection.pk}/").content.decode()
    assert "URL do webhook" in page and "Na Evolution, defina esta como a URL de webhook" in page
    assert "Mensagens por dia" in page and "Uma conexão inativa não envia nada" in page
    assert "Nenhuma campanha usa esta conexão." in page


def test_the_delivery_says_in_portuguese_why_it_is_not_retried(alice: object, acme: Tenant) -> None:
    campaign = make_campaign(acme, status="finished", deliveries=1)
    Connection.objects.filter(pk=campaign.connection_id).update(provider=Connection.Provider.CLOUD)
    delivery = Delivery.objects.get(campaign=campaign)
    Delivery.objects.filter(pk=delivery.pk).update(status="failed", error_code="131026", error_message="x")

    page = login("alice", "pt-br").get(f"/deliveries/{delivery.pk}/").content.decode()
    assert "Não deve ser reenviada. O número não pode recebê-la: enviá-la de novo falha do mesmo jeito." in page
