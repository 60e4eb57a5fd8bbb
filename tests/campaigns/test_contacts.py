"""Contacts: the API, CSV import (API and command) with bad rows, encodings and delimiters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.models import Contact
from tests.conftest import ApiClient
from tests.helpers import manage
from tests.live import stack_env


def _upload(api: ApiClient, data: bytes, name: str = "contacts.csv") -> Any:
    return api.post(
        "/api/contacts/import/",
        {"file": SimpleUploadedFile(name, data, content_type="text/csv")},
        HTTP_AUTHORIZATION=f"Bearer {api.token}",
    )


def test_it_creates_a_contact_with_the_phone_in_e164(api_alice: ApiClient, acme: Any) -> None:
    response = api_alice.post_json("/api/contacts/", {"phone": "(11) 98765-4321", "name": "Ana", "tags": ["vip"]})
    assert response.status_code == 201, response.content
    assert response.json()["phone"] == "+5511987654321"
    again = api_alice.post_json("/api/contacts/", {"phone": "+55 11 98765-4321"})
    assert again.status_code == 409 and again.json()["code"] == "duplicate_phone"
    bad = api_alice.post_json("/api/contacts/", {"phone": "12"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_phone"


def test_it_lists_filters_and_opts_out_contacts(api_alice: ApiClient, make_contacts: Any) -> None:
    make_contacts(3, tags=["vip"])
    make_contacts(2, start=5)
    listed = api_alice.get_json("/api/contacts/?tag=vip").json()
    assert listed["count"] == 3
    contact_id = listed["items"][0]["id"]
    response = api_alice.patch_json(f"/api/contacts/{contact_id}/", {"opted_out": True})
    assert response.status_code == 200 and response.json()["opted_out"] is True
    assert api_alice.get_json("/api/contacts/?opted_out=true").json()["count"] == 1


def test_import_reports_bad_rows_by_number_and_imports_the_rest(api_alice: ApiClient, acme: Any) -> None:
    Contact.objects.create(tenant=acme, phone="+5511987650002", name="Old", tags=["old"], attributes={"a": "1"})
    data = (
        "phone,name,tags,city\n"
        "11987650001,Ana,vip|promo,Recife\n"
        "not a phone,Bruno,,\n"
        "+55 11 98765-0002,,new,Natal\n"
        ",Nobody,,\n"
        "\n"
        "11987650003,Carla,,São Paulo\n"
        "11987650004,Extra,,x,y\n"
    ).encode()
    response = _upload(api_alice, data)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["created"], body["updated"]) == (2, 1)
    assert body["errors"] == [
        {"row": 3, "error": "invalid phone"},
        {"row": 5, "error": "missing phone"},
        {"row": 8, "error": "5 columns, the header has 4"},
    ]
    ana = Contact.objects.get(tenant=acme, phone="+5511987650001")
    assert ana.name == "Ana" and ana.tags == ["vip", "promo"] and ana.attributes == {"city": "Recife"}
    old = Contact.objects.get(tenant=acme, phone="+5511987650002")
    assert old.name == "Old" and old.tags == ["old", "new"] and old.attributes == {"a": "1", "city": "Natal"}
    assert Contact.objects.get(tenant=acme, phone="+5511987650003").attributes == {"city": "São Paulo"}


def test_import_reads_latin1_with_semicolons(api_alice: ApiClient, acme: Any) -> None:
    data = "Phone;Name;Cidade\n11987650010;João;Maceió\n11987650011;Zé;Florianópolis\n".encode("latin-1")
    body = _upload(api_alice, data).json()
    assert body["created"] == 2 and body["errors"] == []
    joao = Contact.objects.get(tenant=acme, phone="+5511987650010")
    assert joao.name == "João" and joao.attributes == {"cidade": "Maceió"}


def test_import_reads_utf8_with_bom_and_crlf(api_alice: ApiClient, acme: Any) -> None:
    data = "\ufeffphone,name\r\n11987650020,Émile\r\n".encode()
    assert _upload(api_alice, data).json()["created"] == 1
    assert Contact.objects.get(tenant=acme, phone="+5511987650020").name == "Émile"


def test_import_refuses_a_file_without_a_phone_column(api_alice: ApiClient) -> None:
    response = _upload(api_alice, b"name,city\nAna,Recife\n")
    assert response.status_code == 400 and response.json()["code"] == "invalid_csv"


def test_import_reports_rows_with_nul_or_an_overlong_field_and_imports_the_rest(
    api_alice: ApiClient, acme: Any
) -> None:
    data = b"phone,name\n11987650040,A\x00na\n11987650041," + b"x" * 200_000 + b"\n11987650042,Bia\n"
    response = _upload(api_alice, data)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["created"] == 1 and [e["row"] for e in body["errors"]] == [2, 3]
    assert list(Contact.objects.filter(tenant=acme).values_list("phone", flat=True)) == ["+5511987650042"]


def test_import_refuses_a_utf16_file_or_an_unreadable_header(api_alice: ApiClient, acme: Any) -> None:
    for data in ["phone,name\n11987650050,Ana\n".encode("utf-16"), b"phone," + b"x" * 200_000 + b"\n"]:
        response = _upload(api_alice, data)
        assert response.status_code == 400 and response.json()["code"] == "invalid_csv"
    assert not Contact.objects.filter(tenant=acme).exists()


def test_importcontacts_command_imports_into_the_tenant(transactional_db: Any, acme: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("phone;name\n11987650030;Ana\nbad;Bruno\n".encode("latin-1"))
    result = manage("importcontacts", str(path), "--tenant", "acme", "--json", env=stack_env())
    assert result.returncode == 0, result.stderr
    assert '"created": 1' in result.stdout and '"row": 3' in result.stdout
    assert Contact.objects.filter(tenant=acme, phone="+5511987650030").exists()
    missing = manage("importcontacts", str(path), "--tenant", "nope", env=stack_env())
    assert missing.returncode != 0 and "no tenant" in missing.stderr
