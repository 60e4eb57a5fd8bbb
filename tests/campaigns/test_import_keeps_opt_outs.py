"""A CSV import never clears an opt-out (LGPD: only the person, or an operator with a
reason, brings consent back), whatever the file says, on the request and the worker path."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns import csv_import, services
from campaigns.models import ConsentEvent, Contact
from sense.models import Tenant
from tests.conftest import ApiClient

CSV = (
    b"phone,name,tags,opted_out,opt_out\n"
    b"+5511999990001,Ana Nova,imported,false,0\n"
    b"+5511999990002,Bia,imported,false,no\n"
)


def _opted_out(acme: Tenant) -> Contact:
    ana = Contact.objects.create(tenant=acme, phone="+5511999990001", name="Ana", tags=["old"])
    services.contact_consent_change(contact=ana, opted_out=True, source=ConsentEvent.Source.KEYWORD)
    return ana


def test_an_import_through_the_api_keeps_the_opt_out(api_alice: ApiClient, acme: Tenant) -> None:
    ana = _opted_out(acme)

    response = api_alice.post(
        "/api/contacts/import/",
        {"file": SimpleUploadedFile("contacts.csv", CSV, content_type="text/csv")},
        HTTP_AUTHORIZATION=f"Bearer {api_alice.token}",
    )

    assert response.status_code == 200, response.content
    assert (response.json()["created"], response.json()["updated"]) == (1, 1)
    ana.refresh_from_db()
    assert ana.opted_out and ana.opt_out_source == "keyword" and ana.opted_out_at is not None
    assert ana.name == "Ana Nova" and ana.tags == ["old", "imported"]  # the rest of the row is applied
    assert not Contact.objects.get(tenant=acme, phone="+5511999990002").opted_out
    assert list(ConsentEvent.objects.filter(contact=ana).values_list("opted_out", flat=True)) == [True]


def test_chunked_imports_keep_the_opt_out(acme: Tenant, settings: Any) -> None:
    """The worker's path: the same upsert, one transaction per chunk."""
    settings.CONTACT_IMPORT_CHUNK_ROWS = 1
    ana = _opted_out(acme)

    result = csv_import.import_contacts(tenant=acme, lines=CSV.splitlines(keepends=True))

    assert (result.created, result.updated) == (1, 1)
    assert Contact.objects.get(pk=ana.pk).opted_out
