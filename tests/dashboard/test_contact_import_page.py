"""The import page for large files: they go to a worker, and their page shows a progress bar
(htmx polls its partial while the import runs), then the report with the errors' CSV."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from campaigns import services
from campaigns.models import Contact, ContactImport
from tests.campaigns.test_contact_import_api import csv_file, streamed

HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _small_limit(settings: Any) -> None:
    settings.CONTACT_IMPORT_SYNC_MAX_ROWS = 10
    settings.CONTACT_IMPORT_CHUNK_ROWS = 4


def post(client: Client, data: bytes, **headers: str) -> Any:
    return client.post(
        "/contacts/import/",
        {"file": SimpleUploadedFile("big list.csv", data, content_type="text/csv")},
        headers=headers,
    )


def polls(html: str) -> bool:
    return 'hx-trigger="every 1s"' in html


def test_a_small_file_is_still_reported_at_once(alice_client: Client, acme: Any) -> None:
    response = post(alice_client, csv_file(10, bad={3}))

    assert response.status_code == 200
    assert response.context["result"].created == 9 and response.context["job"] is None
    assert "<strong>9</strong>" in response.content.decode() and not ContactImport.objects.exists()


def test_a_large_file_goes_to_its_progress_page_which_fills_then_shows_the_report(
    alice_client: Client, acme: Any, monkeypatch: Any
) -> None:
    response = post(alice_client, csv_file(12, bad={1, 6}))

    job = ContactImport.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/contacts/imports/{job.pk}/"
    page = alice_client.get(response["Location"]).content.decode()
    assert "big list.csv" in page and polls(page) and 'style="width: 0.0%"' in page
    assert f'hx-get="/contacts/imports/{job.pk}/"' in page

    widths: list[str] = []
    record_chunk = ContactImport.record_chunk

    def record_and_poll(self: ContactImport, **kwargs: Any) -> None:
        record_chunk(self, **kwargs)
        fragment = alice_client.get(f"/contacts/imports/{job.pk}/", headers=HX).content.decode()
        assert "<html" not in fragment and polls(fragment)
        widths.extend(re.findall(r'style="width: ([\d.]+)%"', fragment))

    monkeypatch.setattr(ContactImport, "record_chunk", record_and_poll)
    services.contact_import_run(import_id=job.pk)

    assert widths == ["33.3", "66.7", "100.0"]  # 4, 8, then 12 of 12 rows read
    done = alice_client.get(f"/contacts/imports/{job.pk}/", headers=HX).content.decode()
    assert not polls(done)  # finished: the polling stops
    assert 'style="width: 100.0%"' in done
    assert f'href="/contacts/imports/{job.pk}/errors/"' in done
    assert "<td>3</td><td>invalid phone</td>" in done and "<td>8</td><td>invalid phone</td>" in done
    assert Contact.objects.filter(tenant=acme).count() == 10


def test_an_htmx_upload_shows_the_progress_in_place(alice_client: Client, acme: Any) -> None:
    response = post(alice_client, csv_file(12), **HX)

    job = ContactImport.objects.get()
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="import-result">')
    assert polls(html) and f'hx-get="/contacts/imports/{job.pk}/"' in html
    assert response["HX-Push-Url"] == f"/contacts/imports/{job.pk}/"


def test_a_large_file_without_a_phone_column_is_a_form_error(alice_client: Client, acme: Any) -> None:
    response = post(alice_client, csv_file(20, header="telefone,name,segment"))

    assert response.status_code == 200 and b'class="form-error"' in response.content
    assert not ContactImport.objects.exists()


def test_the_errors_download_has_every_bad_row(alice_client: Client, acme: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(ContactImport, "MAX_REPORTED_ERRORS", 1)
    post(alice_client, csv_file(12, bad={1, 6}))
    job = ContactImport.objects.get()
    services.contact_import_run(import_id=job.pk)

    page = alice_client.get(f"/contacts/imports/{job.pk}/").content.decode()
    assert "<td>3</td>" in page and "<td>8</td>" not in page  # the first bad rows are shown...
    response = alice_client.get(f"/contacts/imports/{job.pk}/errors/")  # ...all of them are downloadable
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    assert list(csv.reader(io.StringIO(streamed(response)))) == [
        ["row", "error"],
        ["3", "invalid phone"],
        ["8", "invalid phone"],
    ]


def test_the_import_page_lists_the_recent_imports(alice_client: Client, charlie_client: Client, acme: Any) -> None:
    post(alice_client, csv_file(12))

    assert "big list.csv" in alice_client.get("/contacts/import/").content.decode()
    assert "big list.csv" not in charlie_client.get("/contacts/import/").content.decode()


def test_another_tenants_import_page_and_download_are_not_found(
    alice_client: Client, charlie_client: Client, acme: Any
) -> None:
    post(alice_client, csv_file(12))
    job = ContactImport.objects.get()

    for path in (f"/contacts/imports/{job.pk}/", f"/contacts/imports/{job.pk}/errors/"):
        assert charlie_client.get(path).status_code == 404
        assert charlie_client.get(path, headers=HX).status_code == 404
        assert alice_client.get(path).status_code == 200
